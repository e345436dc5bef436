"""``/nodes/{node}/capabilities/qemu/cpu|machines``: Sys.Audit on the node first; the machine types are
the installed QEMU's own (each one it accepts), the CPU models those this implementation maps."""

from __future__ import annotations

import subprocess

import pytest

from tests.api_client import API, logged_in, revoke_grants, users_with_grants
from vms.qemu.command import CPU_FAMILY_RE, QEMU_BINARY, X86_64_LEVELS

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    users_with_grants(
        ("cap-nobody@pve", "cap-auditor@pve"), "cap-pw", [(f"/nodes/{NODE}", "PVEAuditor", ["cap-auditor@pve"])]
    )
    yield {"root": logged_in(), "nobody": logged_in("cap-nobody@pve", "cap-pw"),
           "auditor": logged_in("cap-auditor@pve", "cap-pw")}  # fmt: skip
    revoke_grants(("cap-nobody@pve", "cap-auditor@pve"))


def test_machines_are_the_installed_qemus(clients):
    assert clients["nobody"].get(f"{API}/nodes/{NODE}/capabilities/qemu/machines").status_code == 403
    machines = clients["auditor"].get(f"{API}/nodes/{NODE}/capabilities/qemu/machines").json()["data"]
    assert {m["type"] for m in machines} == {"i440fx", "q35"}
    newest = machines[0]
    assert newest["id"] == f"pc-{newest['type']}-{newest['version']}"
    checked = subprocess.run([QEMU_BINARY, "-machine", f"{newest['id']},help"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr  # QEMU knows it


def test_cpu_models_are_the_ones_the_command_builder_accepts(clients):
    assert clients["nobody"].get(f"{API}/nodes/{NODE}/capabilities/qemu/cpu").status_code == 403
    models = clients["auditor"].get(f"{API}/nodes/{NODE}/capabilities/qemu/cpu").json()["data"]
    names = {m["name"] for m in models}
    assert {"host", "kvm64", "x86-64-v2-AES", "EPYC", "Haswell"} <= names
    for name in names:
        assert CPU_FAMILY_RE.fullmatch(name) or name in X86_64_LEVELS, name
    assert all(m["custom"] == 0 and m["vendor"] for m in models)
    index = clients["auditor"].get(f"{API}/nodes/{NODE}/capabilities/qemu").json()["data"]
    assert {"name": "machines"} in index
