"""Node identity backup and restore (``pvenode identity-backup|identity-restore``) on a real node and a lab cluster.

The single-node tests run in order on one node (its own data dir, SSH, host key and corosync
directories, a real replicator): backup while it runs, refusals that change nothing, a restore
over a changed node that keeps what it replaces, and a restore after everything was wiped that
brings back the same node. The lab test re-installs a member of a 3-node cluster as itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from cluster.lab import services
from cluster.lab.cluster import LabCluster
from replicator import client
from tests.cluster.replication import changeset, pool_op, pools, query, status, submit, wait_converged
from tests.harness import (
    ReplicatorProcess,
    create_postgres_databases,
    drop_postgres_databases,
    manage,
    node_environment,
)

NODE = "idnode"
DATABASE = os.environ.get("PVE_TEST_DATABASE", "sqlite")  # the session's engine (conftest)


class Node:
    """One node's directories, environment and replicator."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.ssh = root / "root-ssh"
        self.host_keys = root / "etc-ssh"
        self.corosync = root / "etc-corosync"
        self.prefix = f"pvetest_identity_{os.getpid()}"
        self.env = {
            **node_environment(self.data, node=NODE, database=DATABASE, db_prefix=self.prefix),
            "PVE_TRANSPORT": "local",  # corosync.conf and authkey exist, but this node runs alone
            "PVE_SSH_DIR": str(self.ssh),
            "PVE_SSH_HOST_KEY": str(self.host_keys / "ssh_host_ed25519_key.pub"),
            "PVE_COROSYNC_CONF": str(self.corosync / "corosync.conf"),
            "PVE_COROSYNC_AUTHKEY": str(self.corosync / "authkey"),
        }
        self.replicator = ReplicatorProcess(self.env)

    def migrate(self) -> None:
        """What runnode does at start (the restored cluster database is current already)."""
        self.data.mkdir(parents=True, exist_ok=True)
        manage(self.env, "migrate", "--database", "default", "--verbosity", "0")
        manage(self.env, "migrate", "--database", "cluster", "--verbosity", "0")

    def pvenode(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return manage({**self.env, **env}, "pvenode", *args, check=False)

    def request(self, message: dict) -> dict:
        return client.request_at(self.replicator.socket_path, message, timeout=60)

    def write(self, poolid: str) -> dict:
        cs_id, payload = changeset(NODE, [pool_op(poolid, "identity test")])
        answer = client.request_at(
            self.replicator.socket_path, {"op": "submit", "id": cs_id}, payload=payload, timeout=60
        )
        assert answer["ok"], answer
        return answer

    def identity(self) -> dict:
        """What makes the running node itself: state, certificate, keys."""
        state = self.request({"op": "status"})
        self.request({"op": "wait_mirror", "version": state["version"], "timeout": 20})
        summed = self.request({"op": "checksum"})
        etc = self.data / "etc" / "pve"
        return {
            "version": state["version"],
            "hash": state["hash"],
            "checksum": summed["checksum"],
            "certificate": (etc / "nodes" / NODE / "pve-ssl.pem").read_text(),
            "ssh_key": (self.ssh / "id_ed25519").read_bytes(),
            "host_key": (self.host_keys / "ssh_host_ed25519_key").read_bytes(),
            "authkey": (self.corosync / "authkey").read_bytes(),
            "secret_key": (self.data / "secret_key").read_bytes(),
            "authorized_keys": (etc / "priv" / "authorized_keys").read_text(),
        }

    def tree(self) -> dict[str, tuple]:
        """Every file and link under the node's directories (content hash and mode), and the database head."""
        found: dict[str, tuple] = {}
        for base in (self.data, self.ssh, self.host_keys, self.corosync):
            for path in sorted(base.rglob("*")) if base.exists() else []:
                if path.name.endswith(".log") or path.is_socket():
                    continue
                if path.is_symlink():
                    found[str(path)] = ("link", os.readlink(path))
                elif path.is_file():
                    found[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
                else:
                    found[str(path)] = ("dir", path.stat().st_mode)
        if DATABASE == "postgresql":
            import psycopg

            with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.prefix}_cluster") as conn:
                found["database"] = conn.execute(
                    "SELECT max(version), count(*) FROM replicator_changelogentry"
                ).fetchone()
        return found

    def wipe(self) -> None:
        """A re-installed host: no data directory, keys, corosync files or databases."""
        for base in (self.data, self.ssh, self.host_keys, self.corosync):
            shutil.rmtree(base, ignore_errors=True)
        if DATABASE == "postgresql":
            create_postgres_databases(self.prefix)


def keygen(path: Path, kind: str = "ed25519") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Node:
    node = Node(tmp_path_factory.mktemp("identity"))
    keygen(node.host_keys / "ssh_host_ed25519_key")
    keygen(node.host_keys / "ssh_host_ecdsa_key", "ecdsa")
    node.corosync.mkdir(parents=True)
    subprocess.run(["corosync-keygen", "-k", str(node.corosync / "authkey")], check=True, capture_output=True)
    (node.corosync / "corosync.conf").write_text("totem {\n  cluster_name: idlab\n}\nnodelist {\n}\n")
    if DATABASE == "postgresql":
        create_postgres_databases(node.prefix)
    node.migrate()
    node.replicator.start()  # creates the root SSH key in PVE_SSH_DIR and publishes it
    os.symlink(node.data / "etc" / "pve" / "priv" / "authorized_keys", node.ssh / "authorized_keys")  # as Proxmox
    keygen(node.ssh / "id_ecdsa", "ecdsa")
    (node.ssh / "id_ecdsa").chmod(0o640)  # a private key others can read: restored 0600
    for i in range(5):
        node.write(f"before-backup-{i}")
    try:
        yield node
    finally:
        node.replicator.stop()
        if DATABASE == "postgresql":
            drop_postgres_databases(node.prefix)


@pytest.fixture(scope="module")
def archive(node) -> Path:
    return node.root / "backups" / "idnode.tar.gz"


@pytest.mark.postgres_too
def test_backup_while_running_is_private_complete_and_at_the_running_version(node, archive):
    archive.parent.mkdir()
    before = node.identity()
    result = node.pvenode("identity-backup", str(archive))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert sorted(p.name for p in archive.parent.iterdir()) == ["idnode.tar.gz"]  # no temporary left behind
    assert f"database at version {before['version']}" in result.stdout and "not kept" not in result.stdout
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        names = set(tar.getnames())
    assert manifest["node"] == NODE and manifest["cluster_name"] == "idlab" and manifest["missing"] == []
    assert (manifest["database"]["version"], manifest["database"]["hash"]) == (before["version"], before["hash"])
    assert manifest["database"]["node_fingerprint"].count(":") == 31
    files = {(entry["role"], entry["name"]): entry for entry in manifest["files"]}
    assert set(files) == {
        ("corosync-authkey", "authkey"),
        ("corosync-conf", "corosync.conf"),
        ("ssh", "id_ed25519"),
        ("ssh", "id_ed25519.pub"),
        ("ssh", "authorized_keys"),
        ("ssh", "id_ecdsa"),
        ("ssh", "id_ecdsa.pub"),
        ("ssh-host", "ssh_host_ed25519_key"),
        ("ssh-host", "ssh_host_ed25519_key.pub"),
        ("ssh-host", "ssh_host_ecdsa_key"),
        ("ssh-host", "ssh_host_ecdsa_key.pub"),
        ("secret-key", "secret_key"),
    }
    assert files[("ssh", "authorized_keys")]["link"].endswith("etc/pve/priv/authorized_keys")
    assert files[("ssh", "id_ed25519")]["private"] and not files[("ssh", "id_ed25519.pub")]["private"]
    assert names == {"manifest.json", manifest["database"]["member"]} | {
        e["member"] for e in manifest["files"] if "member" in e
    }
    again = node.pvenode("identity-backup", str(archive))
    assert again.returncode != 0 and "exists" in again.stderr
    assert node.pvenode("identity-backup", str(archive), "--force").returncode == 0


def damaged_copies(archive: Path, directory: Path) -> dict[str, Path]:
    """A truncated archive, one with a flipped byte, one whose SSH key differs from its manifest, a text file."""
    data = archive.read_bytes()
    copies = {"truncated": data[: len(data) // 2], "flipped": bytearray(data), "text": b"not an archive\n"}
    copies["flipped"][len(data) // 2] ^= 0xFF
    out = io.BytesIO()
    with tarfile.open(archive) as source, tarfile.open(fileobj=out, mode="w:gz") as tar:
        for member in source.getmembers():
            body = source.extractfile(member).read()
            if member.name == "files/ssh/id_ed25519":
                body = body.replace(b"A", b"B", 1)
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    copies["tampered"] = out.getvalue()
    paths = {}
    for name, body in copies.items():
        paths[name] = directory / f"{name}.tar.gz"
        paths[name].write_bytes(bytes(body))
    return paths


@pytest.mark.postgres_too
def test_refusals_change_nothing(node, archive, tmp_path):
    running_before = node.tree()
    refused = node.pvenode("identity-restore", str(archive))
    assert refused.returncode != 0 and "replicator of node idnode is running" in refused.stderr
    assert not (node.data / "backup").exists()
    assert node.request({"op": "status"})["version"] == node.identity()["version"]
    assert {k: v for k, v in node.tree().items() if "cluster.db" not in k} == {
        k: v for k, v in running_before.items() if "cluster.db" not in k
    }

    node.replicator.stop()
    before = node.tree()
    wrong = node.pvenode("identity-restore", str(archive), PVE_NODE_NAME="othernode")
    assert wrong.returncode != 0 and "identity of node 'idnode', this is node 'othernode'" in wrong.stderr
    assert node.tree() == before
    reasons = {
        "truncated": "not a readable identity archive",
        "flipped": "",
        "tampered": "files/ssh/id_ed25519 does not match its checksum",
        "text": "not a readable identity archive",
    }
    for name, path in damaged_copies(archive, tmp_path).items():
        result = node.pvenode("identity-restore", str(path))
        assert result.returncode != 0, (name, result.stdout)
        assert reasons[name] in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert node.tree() == before, name


def _member(name: str, body: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(body), 0o600
    return info, body


def crafted_copies(archive: Path, directory: Path) -> dict[str, tuple[Path, str]]:
    """Archives an attacker could hand to the restore, each with the refusal it must meet."""
    with tarfile.open(archive) as tar:
        original = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    manifest = json.loads(dict((i.name, b) for i, b in original)["manifest.json"])

    def without(name: str) -> list[tuple]:
        return [(i, b) for i, b in original if i.name != name]

    def with_manifest(change) -> list[tuple]:  # type: ignore[no-untyped-def]
        """The archive with its manifest edited by ``change``, plus the members ``change`` returns."""
        changed = json.loads(json.dumps(manifest))
        extra = change(changed) or []
        rest = [(i, b) for i, b in original if i.name != "manifest.json"]
        return [_member("manifest.json", json.dumps(changed).encode()), *rest, *extra]

    def add_piece(role: str, name: str, body: bytes):  # type: ignore[no-untyped-def]
        def change(m: dict) -> list[tuple]:
            m["files"].append(
                {
                    "role": role,
                    "name": name,
                    "member": f"files/{role}/{name}",
                    "mode": 0o600,
                    "private": True,
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "size": len(body),
                    "path": "x",
                }
            )
            return [_member(f"files/{role}/{name}", body)]

        return change

    def set_link(name: str, target: str):  # type: ignore[no-untyped-def]
        def change(m: dict) -> None:
            entries = [e for e in m["files"] if (e["role"], e["name"]) == ("ssh", name)]
            if entries:
                entries[0]["link"] = target
            else:
                m["files"].append({"role": "ssh", "name": name, "link": target, "path": "x"})

        return change

    def rename_member(m: dict) -> None:
        entry = next(e for e in m["files"] if (e["role"], e["name"]) == ("ssh", "id_ed25519"))
        entry["member"] = "files/ssh-host/id_ed25519"

    key = "files/ssh/id_ed25519"
    cases = {
        "extra member": ([*original, _member("files/ssh/rc", b"evil")], "does not list: files/ssh/rc"),
        "absolute member": ([*original, _member("/etc/cron.d/evil", b"* * * * * root evil")], "name outside"),
        "dot-dot member": ([*original, _member("files/../../evil", b"evil")], "name outside"),
        "symlink member": (
            [*without(key), _member(key, kind=tarfile.SYMTYPE, link="/etc/shadow")],
            f"{key} is a symlink",
        ),
        "hard link member": (
            [*without(key), _member(key, kind=tarfile.LNKTYPE, link="manifest.json")],
            f"{key} is a hard link",
        ),
        "device member": ([*original, _member("files/ssh/null", kind=tarfile.CHRTYPE)], "is a device file"),
        "fifo member": ([*original, _member("files/ssh/fifo", kind=tarfile.FIFOTYPE)], "is a device file or fifo"),
        "directory member": ([*original, _member("files/ssh", kind=tarfile.DIRTYPE)], "is a directory"),
        "duplicate member": ([_member(key, b"evil key"), *original], f"holds member {key} twice"),
        "missing member": (without("files/ssh/id_ed25519.pub"), "lacks members its manifest lists"),
        "unknown ssh file": (with_manifest(add_piece("ssh", "rc", b"evil")), "ssh/rc, which is not a file"),
        "sshd config": (
            with_manifest(add_piece("ssh-host", "sshd_config", b"PermitRootLogin yes\n")),
            "ssh-host/sshd_config",
        ),
        "link elsewhere": (with_manifest(set_link("authorized_keys", "/etc/shadow")), "only ssh/authorized_keys"),
        "another link": (with_manifest(set_link("id_rsa", "/tmp/evil")), "only ssh/authorized_keys"),
        "misplaced member": (with_manifest(rename_member), "malformed entry for ssh/id_ed25519"),
    }
    paths = {}
    for name, (members, reason) in cases.items():
        path = directory / f"{name.replace(' ', '-')}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for info, body in members:
                tar.addfile(info, io.BytesIO(body) if info.isreg() else None)
        paths[name] = (path, reason)
    return paths


@pytest.mark.postgres_too
def test_crafted_archives_are_refused_and_change_nothing(node, archive, tmp_path):
    """Members beyond the manifest, links, devices, paths outside the known targets: each refused, nothing written."""
    node.replicator.stop()
    before = node.tree()
    for name, (path, reason) in crafted_copies(archive, tmp_path).items():
        result = node.pvenode("identity-restore", str(path))
        assert result.returncode != 0, (name, result.stdout)
        assert reason in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert node.tree() == before, name


@pytest.mark.postgres_too
def test_restore_over_a_changed_node_keeps_what_it_replaces(node, archive):
    original = (node.ssh / "id_ed25519").read_bytes()
    keygen(node.root / "other" / "id_ed25519")
    shutil.copyfile(node.root / "other" / "id_ed25519", node.ssh / "id_ed25519")  # a re-install made a new key
    replaced = (node.ssh / "id_ed25519").read_bytes()
    node.replicator.start()
    result = node.pvenode("identity-restore", str(archive), "--allow-running")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(
        "WARNING: the replicator was running on the replaced database: restart it now"
    )
    node.replicator.stop()
    assert (node.ssh / "id_ed25519").read_bytes() == original
    [kept] = (node.data / "backup").glob("identity-restore-*")
    assert f"replaced files are kept in {kept}" in result.stdout
    assert (kept / "ssh" / "id_ed25519").read_bytes() == replaced
    assert f"unchanged {node.corosync / 'authkey'}" in result.stdout
    if DATABASE == "sqlite":
        assert (kept / "database" / "cluster.db").exists()
    else:
        assert (kept / "database" / "cluster.pgdump").stat().st_size > 0
    node.replicator.start()
    with tarfile.open(archive) as tar:
        saved = json.loads(tar.extractfile("manifest.json").read())["database"]
    state = node.request({"op": "status"})
    assert (state["version"], state["hash"]) == (saved["version"], saved["hash"])  # the new key's row is gone


@pytest.mark.postgres_too
def test_restore_after_a_wipe_brings_back_the_same_node(node, archive):
    before = node.identity()
    node.replicator.stop()
    node.wipe()
    result = node.pvenode("identity-restore", str(archive))
    assert result.returncode == 0, result.stderr
    assert "restored the cluster database at version" in result.stdout and "next: start" in result.stdout
    modes = {
        node.ssh / "id_ed25519": 0o600,
        node.ssh / "id_ed25519.pub": 0o644,
        node.host_keys / "ssh_host_ed25519_key": 0o600,
        node.host_keys / "ssh_host_ecdsa_key.pub": 0o644,
        node.ssh / "id_ecdsa": 0o600,
        node.corosync / "authkey": 0o400,  # as corosync-keygen made it
        node.corosync / "corosync.conf": 0o644,
        node.data / "secret_key": 0o600,
    }
    assert {path: stat.S_IMODE(path.stat().st_mode) for path in modes} == modes
    assert stat.S_IMODE(node.ssh.stat().st_mode) == 0o700
    assert os.readlink(node.ssh / "authorized_keys") == str(node.data / "etc" / "pve" / "priv" / "authorized_keys")
    node.migrate()  # the node-local database is new
    node.replicator.start()
    after = node.identity()
    assert after == before
    assert node.write("after-restore")["version"] == before["version"] + 1


# --- a member of a 3-node lab cluster re-installed as itself ------------------------------------


def _host_keys(cluster: LabCluster) -> None:
    for node in cluster.nodes:
        node.env["PVE_SSH_HOST_KEY"] = str(node.directory / "ssh-host" / "ssh_host_ed25519_key.pub")
        keygen(node.directory / "ssh-host" / "ssh_host_ed25519_key")


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(3, name="idlab", prepare=_host_keys)


@pytest.mark.slow
def test_a_reinstalled_member_rejoins_as_itself_and_catches_up(lab, tmp_path):
    node1, node3 = lab.nodes[0], lab.nodes[2]
    for i in range(20):
        assert submit(lab.nodes[i % 3], [pool_op(f"early-{i}")])["ok"]
    wait_converged(lab)
    certificate = (node3.directory / "etc" / "pve" / "nodes" / "node3" / "pve-ssl.pem").read_text()
    keys = query(node1, "SELECT path, content FROM authz_keymaterial WHERE path LIKE 'nodes/node3/%' ORDER BY path")
    archive = tmp_path / "node3.tar.gz"
    backup = manage(node3.env, "pvenode", "identity-backup", str(archive))
    assert "cluster lab" in backup.stdout and "corosync.conf" in backup.stdout

    lab.stop_service(node3)
    lab.stop_corosync(node3)
    for i in range(30):  # the cluster goes on without node3
        assert submit(lab.nodes[i % 2], [pool_op(f"meanwhile-{i}")])["ok"]
    shutil.rmtree(node3.directory)  # re-installed: nothing of node3 is left
    restored = manage(node3.env, "pvenode", "identity-restore", str(archive))
    assert "rejoins cluster lab as itself" in restored.stdout, restored.stdout
    assert (node3.directory / "corosync.conf").exists()  # what its corosync reads

    (node3.directory / "corosync-lib").mkdir()  # /var/lib/corosync, which the corosync package provides
    lab.start_corosync(node3)
    services.manage(node3.env, "migrate", "--database", "default", "--verbosity", "0")
    lab.start_service(node3)
    services.wait_ready(node3.socket_path, node3.service, 90)
    converged = wait_converged(lab, timeout=90)
    assert status(node3)["version"] == converged["version"]
    assert len(pools(node3, "meanwhile-")) == 30 and len(pools(node3, "early-")) == 20
    assert (node3.directory / "etc" / "pve" / "nodes" / "node3" / "pve-ssl.pem").read_text() == certificate
    assert (
        query(node1, "SELECT path, content FROM authz_keymaterial WHERE path LIKE 'nodes/node3/%' ORDER BY path")
        == keys
    )
    assert submit(node3, [pool_op("written-on-node3-again")])["ok"]
    wait_converged(lab)
