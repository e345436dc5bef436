"""Cloud-init: the ``ci*``/``ipconfigN`` options (strict values, the password stored hashed and never
shown), the NoCloud documents built from the config, and a real QEMU whose cloud-init drive holds
the ISO built at start; ``GET|PUT {vm}/cloudinit`` and ``cloudinit/dump`` with their permissions."""

from __future__ import annotations

import io
from urllib.parse import quote

import pycdlib
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cluster.models import ClusterLogEntry
from tests.api_client import API, logged_in, revoke_grants, users_with_grants
from vms.cloudinit import image, options, render
from vms.models import VM
from vms.qemu import lifecycle, process, qmp

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE, VMID = "testnode", 7796
USERS = ("ci-nobody@pve", "ci-audit@pve", "ci-user@pve", "ci-net@pve")
URL = f"{API}/nodes/{NODE}/qemu/{VMID}"
FORM = "application/x-www-form-urlencoded"


def public_key(comment: str = "me@host") -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


# --- pure: values and documents ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["ip=10.0.0.5/24,gw=10.0.0.1", "ip=dhcp", "ip6=auto", "ip6=fd00::5/64,gw6=fd00::1", "ip=dhcp,ip6=dhcp"],
)
def test_good_ipconfigs_pass(value):
    assert options.check_ipconfig(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ip=10.0.0.5", "invalid IPv4"),  # no prefix length
        ("ip=10.0.0.300/24", "invalid IPv4"),
        ("ip=fd00::1/64", "invalid IPv4"),
        ("ip6=10.0.0.1/24", "invalid IPv6"),
        ("gw=10.0.0.1", "without specifying an IP address"),
        ("ip=dhcp,gw=10.0.0.1", "together with DHCP"),
        ("ip=10.0.0.5/24,gw=fd00::1", "invalid IPv4"),
        ("ip=10.0.0.5/24,mtu=9000", "unknown property"),
    ],
)
def test_bad_ipconfigs_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        options.check_ipconfig(value)


def test_ssh_keys_must_be_real_public_keys():
    one, two = public_key(), public_key("other")
    encoded = quote(f"{one}\n{two}\n", safe="")
    assert options.check_sshkeys(encoded) == encoded
    assert options.ssh_keys(encoded) == [one, two]
    for bad in ("ssh-ed25519 AAAAnotbase64!!", "ssh-rsa " + one.split()[1], "hello", quote("\n\n", safe="")):
        with pytest.raises(ValueError):
            options.check_sshkeys(quote(bad, safe=""))


def test_the_password_is_stored_as_a_sha512_crypt_hash():
    hashed = options.check_cipassword("s3cret pass")
    assert hashed.startswith("$6$") and "s3cret" not in hashed
    assert options.crypt.crypt("s3cret pass", hashed) == hashed  # libcrypt itself verifies it
    assert options.check_cipassword(hashed) == hashed  # an existing hash is kept
    assert options.check_cipassword("s3cret pass") != hashed  # a new salt each time


def test_documents_are_yaml_carrying_the_options():
    key = public_key()
    config = {
        "name": "web1",
        "ciuser": "ad'min: x",  # quotes and colons stay inside the value
        "cipassword": "$6$salt$hash",
        "sshkeys": quote(key, safe=""),
        "searchdomain": "example.org other.org",
        "nameserver": "10.0.0.53, fd00::53",
        "ciupgrade": "0",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "net1": "e1000=BC:24:11:00:00:02,bridge=vmbr0",
        "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto",
        "ipconfig1": "ip=dhcp",
    }
    user = yaml.safe_load(render.user_data(100, config))
    assert render.user_data(100, config).startswith("#cloud-config\n")
    assert user["hostname"] == "web1" and user["fqdn"] == "web1.example.org"
    assert user["user"] == "ad'min: x" and user["password"] == "$6$salt$hash"
    assert user["ssh_authorized_keys"] == [key] and user["package_upgrade"] is False
    network = yaml.safe_load(render.network_config(config))
    assert network["version"] == 1
    eth0, eth1, dns = network["config"]
    assert (eth0["name"], eth0["mac_address"]) == ("eth0", "bc:24:11:00:00:01")
    assert eth0["subnets"] == [
        {"type": "static", "address": "10.0.0.5/24", "gateway": "10.0.0.1"},
        {"type": "ipv6_slaac"},
    ]
    assert eth1["subnets"] == [{"type": "dhcp4"}]
    assert dns == {"type": "nameserver", "address": ["10.0.0.53", "fd00::53"], "search": ["example.org", "other.org"]}
    meta = yaml.safe_load(render.meta_data(100, config))
    assert meta["instance-id"] == yaml.safe_load(render.meta_data(100, dict(config)))["instance-id"]
    assert meta["instance-id"] != yaml.safe_load(render.meta_data(100, {**config, "ciuser": "root"}))["instance-id"]


# --- API and a real QEMU -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    from authz.models import User
    from authz.services.roles import delete_role, save_role

    root = User.objects.get(userid="root@pam")
    save_role("CiNetOnly", ["VM.Config.Network", "VM.Audit"], actor=root, create=True)
    VM.objects.filter(vmid=VMID).delete()
    config = {
        "name": "cloudy",
        "memory": "128",
        "ide2": "local:cloudinit,media=cdrom",
        "net0": "virtio=BC:24:11:AA:BB:01",
    }
    VM(vmid=VMID, node_id=NODE, config=config).save()
    users_with_grants(
        USERS,
        "cloudinit-pw",
        [
            (f"/vms/{VMID}", "PVEAuditor", ["ci-audit@pve"]),
            (f"/vms/{VMID}", "PVEVMUser", ["ci-user@pve"]),  # holds VM.Config.Cloudinit
            (f"/vms/{VMID}", "CiNetOnly", ["ci-net@pve"]),
        ],
    )
    yield {"root": logged_in(), **{u.split("@")[0][3:]: logged_in(u, "cloudinit-pw") for u in USERS}}
    process.terminate(VMID, timeout=5, log=lambda line: None)
    process.cleanup(VMID, {})
    image.forget(VMID)
    revoke_grants(USERS)
    delete_role("CiNetOnly", actor=root)
    VM.objects.filter(vmid=VMID).delete()


def set_config(client, **values):  # type: ignore[no-untyped-def]
    return client.put(
        f"{URL}/config", "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items()), content_type=FORM
    )


def stored() -> dict[str, str]:
    return VM.objects.get(vmid=VMID).config


def test_setting_cloudinit_options_needs_cloudinit_or_network(clients):
    assert set_config(clients["nobody"], ciuser="x").status_code == 403
    assert set_config(clients["audit"], ciuser="x").status_code == 403
    assert set_config(clients["user"], ciuser="alice", nameserver="10.0.0.53").status_code == 200
    assert set_config(clients["net"], ipconfig0="ip=10.0.0.5/24,gw=10.0.0.1").status_code == 200  # either privilege
    assert set_config(clients["net"], name="renamed").status_code == 403  # Network is not Options
    assert (stored()["ciuser"], stored()["ipconfig0"]) == ("alice", "ip=10.0.0.5/24,gw=10.0.0.1")


def test_bad_values_change_nothing(clients):
    before = stored()
    answer = set_config(clients["root"], ipconfig0="ip=dhcp,gw=10.0.0.1", sshkeys="not-a-key", ciuser="bob")
    assert answer.status_code == 400
    assert set(answer.json()["errors"]) == {"ipconfig0", "sshkeys"}
    assert set_config(clients["root"], cicustom="user=local:snippets/u.yaml").status_code == 400  # not served
    assert stored() == before


def test_the_password_is_hashed_masked_and_never_logged(clients):
    key = public_key()
    answer = set_config(clients["user"], cipassword="Pl41n-text", sshkeys=quote(key, safe=""))
    assert answer.status_code == 200, answer.content
    hashed = stored()["cipassword"]
    assert hashed.startswith("$6$")
    config = clients["audit"].get(f"{URL}/config").json()["data"]
    assert config["cipassword"] == "**********"
    pending = {item["key"]: item for item in clients["audit"].get(f"{URL}/pending").json()["data"]}
    assert pending["cipassword"]["value"] == "**********"
    logged = " ".join(ClusterLogEntry.objects.filter(tag="qmconfig").values_list("msg", flat=True))
    assert "<hidden>" in logged and hashed not in logged and "Pl41n-text" not in logged


def test_cloudinit_view_and_dump_permissions(clients):
    assert clients["nobody"].get(f"{URL}/cloudinit").status_code == 403
    assert clients["nobody"].get(f"{URL}/cloudinit/dump?type=user").status_code == 403
    assert clients["audit"].put(f"{URL}/cloudinit").status_code == 403
    assert clients["net"].put(f"{URL}/cloudinit").status_code == 403  # regenerating needs Cloudinit itself
    bad = clients["audit"].get(f"{URL}/cloudinit/dump?type=vendor")
    assert bad.status_code == 400 and "type" in bad.json()["errors"]
    user = clients["audit"].get(f"{URL}/cloudinit/dump?type=user")
    assert user.status_code == 200 and yaml.safe_load(user.json()["data"])["user"] == "alice"
    network = yaml.safe_load(clients["audit"].get(f"{URL}/cloudinit/dump?type=network").json()["data"])
    assert network["config"][0]["subnets"][0]["address"] == "10.0.0.5/24"
    # never built on this node: every value waits for the next start
    items = clients["audit"].get(f"{URL}/cloudinit").json()["data"]
    assert items and all("pending" in item and "value" not in item for item in items)
    assert {"key": "cipassword", "pending": "**********"} in items


def iso_files(path) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("user-data", "meta-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return label, files
    finally:
        iso.close()


def medium(vmid: int, key: str) -> str:
    for device in qmp.command(vmid, "query-block"):
        if device.get("qdev") == key or device.get("device") == f"drive-{key}":
            return device.get("inserted", {}).get("file", "")
    raise AssertionError(f"{key} not found")


def test_a_started_vm_reads_the_image_built_from_its_config(clients):
    lifecycle.start_vm(VMID, log=lambda line: None)
    path = image.image_path(VMID)
    assert medium(VMID, "ide2") == str(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    label, files = iso_files(path)
    assert label == "cidata"
    user = yaml.safe_load(files["user-data"])
    assert user["user"] == "alice" and user["password"] == stored()["cipassword"]
    assert yaml.safe_load(files["network-config"])["config"][0]["mac_address"] == "bc:24:11:aa:bb:01"
    items = {item["key"]: item for item in clients["audit"].get(f"{URL}/cloudinit").json()["data"]}
    assert items["ciuser"] == {"key": "ciuser", "value": "alice"}  # nothing pending after the build


def test_a_change_is_pending_until_regenerated_into_the_running_vm(clients):
    assert set_config(clients["user"], ciuser="carol").status_code == 200
    answer = clients["user"].post(f"{URL}/config", "delete=nameserver", content_type=FORM)
    assert answer.status_code == 200, answer.content
    items = {item["key"]: item for item in clients["audit"].get(f"{URL}/cloudinit").json()["data"]}
    assert items["ciuser"] == {"key": "ciuser", "value": "alice", "pending": "carol"}
    assert items["nameserver"] == {"key": "nameserver", "value": "10.0.0.53", "delete": 1}
    assert clients["user"].put(f"{URL}/cloudinit").status_code == 200
    assert medium(VMID, "ide2") == str(image.image_path(VMID))
    _label, files = iso_files(image.image_path(VMID))
    assert yaml.safe_load(files["user-data"])["user"] == "carol"
    assert "nameserver" not in files["network-config"]
    items = clients["audit"].get(f"{URL}/cloudinit").json()["data"]
    assert all("pending" not in item and "delete" not in item for item in items)
    assert process.is_running(VMID)


def test_stopping_removes_the_image(clients):
    lifecycle.stop_vm(VMID, log=lambda line: None)
    assert not image.image_path(VMID).exists()
    items = {item["key"]: item for item in clients["audit"].get(f"{URL}/cloudinit").json()["data"]}
    assert items["ciuser"] == {"key": "ciuser", "value": "carol"}  # what the last image held


def test_a_clone_keeps_its_cloudinit_drive_and_options(clients):
    from authz.models import User
    from vms.services import clone

    source = VM.objects.get(vmid=VMID)
    copy = clone.clone_vm(source, VMID + 1, actor=User.objects.get(userid="root@pam"), name="cloned")
    try:
        assert copy.config["ide2"] == source.config["ide2"]
        assert copy.config["ciuser"] == "carol" and copy.config["cipassword"] == source.config["cipassword"]
        user = yaml.safe_load(
            clients["root"].get(f"{API}/nodes/{NODE}/qemu/{VMID + 1}/cloudinit/dump?type=user").json()["data"]
        )
        assert user["hostname"] == "cloned"
    finally:
        VM.objects.filter(vmid=VMID + 1).delete()
