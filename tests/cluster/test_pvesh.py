"""``manage.py pvesh`` against the session's node: the API's own handlers as root@pam, the bare payload,
errors as proxmoxer's command-line backends read them, and proxmoxer's ``local`` backend itself
driving it through a ``pvesh`` on its PATH."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from cluster import pvesh as shell_api
from replicator import client
from tests.harness import REPO, manage

pytestmark = [pytest.mark.usefixtures("replicator")]
GROUP = "pvesh-group"


def pvesh(node_env, *args: str):  # type: ignore[no-untyped-def]
    return manage(node_env, "pvesh", *args, check=False)


def test_get_prints_the_bare_payload_in_each_format(node_env):
    done = pvesh(node_env, "get", "/version", "--output-format", "json")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    data = json.loads(done.stdout)
    assert "version" in data and "data" not in data
    pretty = pvesh(node_env, "get", "/version", "--output-format", "json-pretty")
    assert json.loads(pretty.stdout) == data and "\n    " in pretty.stdout
    text = pvesh(node_env, "get", "/version")
    assert f"version: {data['version']}" in text.stdout.splitlines()


def test_create_set_get_delete_go_through_the_api(node_env):
    before = client.status()["version"]
    assert pvesh(node_env, "create", "/access/groups", "-groupid", GROUP, "-comment", "first").returncode == 0
    assert client.status()["version"] > before  # a real replicated change
    got = json.loads(pvesh(node_env, "get", f"/access/groups/{GROUP}", "--output-format", "json").stdout)
    assert got["comment"] == "first"
    assert pvesh(node_env, "set", f"/access/groups/{GROUP}", "--comment=second").returncode == 0
    listed = json.loads(pvesh(node_env, "get", "/access/groups", "--output-format", "json").stdout)
    assert {"groupid": GROUP, "comment": "second"}.items() <= next(g for g in listed if g["groupid"] == GROUP).items()
    assert pvesh(node_env, "delete", f"/access/groups/{GROUP}").returncode == 0
    gone = pvesh(node_env, "get", f"/access/groups/{GROUP}")
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr.splitlines()[-1].split()[0].isdigit(), gone.stderr


def test_errors_are_a_status_line_and_change_nothing(node_env):
    before = client.status()["version"]
    bad = pvesh(node_env, "create", "/access/groups", "-groupid", "no spaces allowed")
    assert (bad.returncode, bad.stderr) == (1, "400 invalid group id 'no spaces allowed'\n")
    missing = pvesh(node_env, "create", "/access/groups", "-comment", "no id")
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[0].startswith("400 Parameter verification failed"), missing.stderr
    assert "groupid: property is missing and it is not optional" in missing.stderr.splitlines(), missing.stderr
    assert pvesh(node_env, "frobnicate", "/version").returncode == 2
    assert pvesh(node_env, "get", "/version", "-output-format", "xml").returncode == 2
    assert pvesh(node_env, "set", "/access/groups/x", "-comment").returncode == 2  # an option without its value
    assert client.status()["version"] == before


def test_ls_and_usage(node_env):
    listed = pvesh(node_env, "ls", "/")
    assert listed.returncode == 0, listed.stderr
    assert {"access", "cluster", "nodes", "version"} <= set(listed.stdout.split())
    usage = pvesh(node_env, "usage", "/access/groups")
    assert usage.returncode == 0, usage.stderr
    assert "GET /access/groups  (pvesh get)" in usage.stdout and "POST /access/groups  (pvesh create)" in usage.stdout
    assert "DELETE" not in usage.stdout
    assert pvesh(node_env, "usage", "/no/such/path").returncode == 2


def test_arguments_as_proxmoxer_and_people_write_them():
    call = shell_api.parse(["set", "nodes/x/", "-a", "1", "--b=2", "-a", "3", "--noheader", "-c", "-4"])
    assert (call.verb, call.path, call.values) == ("set", "/nodes/x", {"a": ["1", "3"], "b": "2", "c": "-4"})
    assert shell_api.render([{"vmid": 100, "name": "a"}, {"vmid": 7}], "text").splitlines() == [
        "name  vmid",
        "a     100",
        "      7",
    ]
    assert shell_api.children([{"subdir": "qemu"}, {"node": "n1", "status": "online"}, "x"]) == ["qemu", "n1", "x"]


@pytest.fixture
def on_path(node_env, tmp_path, monkeypatch) -> Path:
    """A ``pvesh`` executable (this project's) first on PATH, as on a node."""
    script = tmp_path / "pvesh"
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in node_env.items())
    script.write_text(f'#!/bin/sh\n{exports}exec {sys.executable} {REPO / "manage.py"} pvesh "$@"\n')
    script.chmod(0o700)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return script


def test_proxmoxers_local_backend(on_path):
    px = ProxmoxAPI(backend="local", service="PVE", timeout=60)
    assert "version" in px.version.get()
    px.access.groups.post(groupid=GROUP, comment="from proxmoxer")
    try:
        assert px.access.groups(GROUP).get()["comment"] == "from proxmoxer"
        with pytest.raises(ResourceException) as missing:
            px.access.groups("pvesh-missing").get()
        assert missing.value.status_code >= 400
    finally:
        px.access.groups(GROUP).delete()
    assert GROUP not in [g["groupid"] for g in px.access.groups.get()]
