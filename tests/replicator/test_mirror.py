"""The config tree mirror rendered by the replicator: formats, modes, links, clean-up."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509

from authz.models import Pool, User
from cluster.models import ClusterSettings
from replicator import client
from vms.models import VM, Storage

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _sync() -> None:
    client.wait_mirror(int(client.status()["version"]))


def test_tree_layout_modes_and_links(etc_dir):
    _sync()
    assert _mode(etc_dir / "priv") == 0o700
    assert _mode(etc_dir / "nodes/testnode/priv") == 0o700
    for private in ("priv/authkey.key", "priv/pve-root-ca.key", "priv/shadow.cfg", "nodes/testnode/priv/pve-ssl.key"):
        assert _mode(etc_dir / private) == 0o600, private
    for public in (
        "authkey.pub",
        "pve-root-ca.pem",
        "user.cfg",
        "domains.cfg",
        "storage.cfg",
        "datacenter.cfg",
        "nodes/testnode/pve-ssl.pem",
    ):
        assert _mode(etc_dir / public) == 0o640, public
    assert os.readlink(etc_dir / "local") == "nodes/testnode"
    assert os.readlink(etc_dir / "qemu-server") == "nodes/testnode/qemu-server"
    assert not [p for p in etc_dir.rglob(".*.tmp")]


def test_node_certificate_is_signed_by_the_cluster_ca(etc_dir):
    ca = x509.load_pem_x509_certificate((etc_dir / "pve-root-ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((etc_dir / "nodes/testnode/pve-ssl.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "testnode" in names


def test_access_files(etc_dir):
    _sync()
    domains = (etc_dir / "domains.cfg").read_text()
    assert "pam: pam\n\tcomment Linux PAM standard authentication\n" in domains
    assert "pve: pve\n\tcomment Proxmox VE authentication server\n\tdefault 1\n" in domains
    user_cfg = (etc_dir / "user.cfg").read_text()
    assert "user:root@pam:1:0:::root@localhost:Superuser::\n" in user_cfg

    user = User(userid="mallory@pve", realm_id="pve", comment="nice\nuser:evil@pve:1:0::::::", firstname="a:b")
    user.set_password("pw-of-mallory")
    user.save()
    client.wait_mirror(user.version)
    lines = (etc_dir / "user.cfg").read_text().splitlines()
    assert not any(line.startswith("user:evil@pve") for line in lines)
    mallory = next(line for line in lines if line.startswith("user:mallory@pve:"))
    assert mallory.count(":") == 9 and "a%3Ab" in mallory and "%0A" in mallory
    shadow = (etc_dir / "priv/shadow.cfg").read_text()
    assert any(line.startswith("mallory@pve:pbkdf2_sha256$") for line in shadow.splitlines())


def test_pool_lines_follow_members(etc_dir):
    Pool(poolid="mirrorpool", comment="web tier").save()
    vm = VM(vmid=950, node_id="testnode", pool_id="mirrorpool", config={"name": "p"})
    vm.save()
    client.wait_mirror(vm.version)
    assert "pool:mirrorpool:web tier:950::\n" in (etc_dir / "user.cfg").read_text()
    vm.delete()
    _sync()
    assert "pool:mirrorpool:web tier:::\n" in (etc_dir / "user.cfg").read_text()


def test_storage_and_datacenter_files(etc_dir):
    storage = Storage(storeid="shared-nfs", path="/mnt/pve/nfs", content="images,backup", shared=True, nodes="testnode")
    storage.save()
    settings_row = ClusterSettings.objects.get(id="datacenter")
    settings_row.options = {**settings_row.options, "next-id": "lower=1000,upper=2000"}
    settings_row.save()
    client.wait_mirror(settings_row.version)
    text = (etc_dir / "storage.cfg").read_text()
    assert "dir: shared-nfs\n\tpath /mnt/pve/nfs\n\tcontent images,backup\n\tshared 1\n\tnodes testnode\n" in text
    assert text.startswith("dir: local\n") or "\n\ndir: local\n" in text  # other modules add storages
    assert "next-id: lower=1000,upper=2000\n" in (etc_dir / "datacenter.cfg").read_text()
    settings_row.options.pop("next-id")
    settings_row.save()
    storage.delete()


def test_moved_vm_config_leaves_the_old_node_directory(etc_dir):
    from cluster.models import Node

    Node(name="othernode", nodeid=99, address="127.0.0.2").save()
    vm = VM(vmid=951, node_id="testnode", config={"name": "mover"})
    vm.save()
    client.wait_mirror(vm.version)
    assert (etc_dir / "nodes/testnode/qemu-server/951.conf").exists()
    vm.node_id = "othernode"
    vm.save()
    client.wait_mirror(vm.version)
    assert not (etc_dir / "nodes/testnode/qemu-server/951.conf").exists()
    assert (etc_dir / "nodes/othernode/qemu-server/951.conf").read_text() == "name: mover\n"
    vm.delete()
    Node.objects.get(name="othernode").delete()
