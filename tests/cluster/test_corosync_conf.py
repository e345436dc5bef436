"""corosync.conf: format, config_version bumps, the host copy (never a downgrade) and a real reload."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.corosync import conf as corosync_conf
from cluster.lab.cluster import LabCluster
from cluster.models import ClusterSettings, CorosyncConfig, Node
from replicator import client
from replicator import files as replicator_files
from replicator.exceptions import ConflictError

# The session replicator (started after collection) copies into the test data directory, never
# into /etc/corosync; ``host_conf`` checks the running process really got this.
HOST_CONF = Path(os.environ["PVE_DATA_DIR"]) / "corosync" / "corosync.conf"
assert os.environ["PVE_COROSYNC_CONF"] == str(HOST_CONF)  # set by tests.harness.node_environment
PROBE = Path(__file__).with_name("corosync_conf_probe.py")

GOLDEN = """\
logging {
  debug: off
  to_syslog: yes
}

nodelist {
  node {
    name: pve-a
    nodeid: 3
    quorum_votes: 1
    ring0_addr: 10.0.0.3
    ring1_addr: 10.1.0.3
  }
  node {
    name: pve-b
    nodeid: 1
    quorum_votes: 1
    ring0_addr: 10.0.0.1
    ring1_addr: 10.1.0.1
  }
  node {
    name: pve-c
    nodeid: 2
    quorum_votes: 2
    ring0_addr: 10.0.0.2
    ring1_addr: 10.1.0.2
  }
}

quorum {
  provider: corosync_votequorum
}

totem {
  cluster_name: prod
  config_version: 3
  interface {
    knet_link_priority: 10
    linknumber: 0
  }
  interface {
    linknumber: 1
  }
  ip_version: ipv4-6
  link_mode: passive
  secauth: on
  token_coefficient: 125
  version: 2
}

"""


def _config(**fields: object) -> CorosyncConfig:
    values: dict[str, object] = {
        "cluster_name": "prod",
        "config_version": 3,
        "totem": dict(corosync_conf.DEFAULT_TOTEM),
        "interfaces": {"1": {}, "0": {"knet_link_priority": 10}},
        "sections": dict(corosync_conf.DEFAULT_SECTIONS),
    }
    values.update(fields)
    return CorosyncConfig(**values)


def _three_nodes() -> list[Node]:
    return [
        Node(name="pve-c", nodeid=2, address="10.0.0.2", votes=2, links={"1": "10.1.0.2"}),
        Node(name="pve-a", nodeid=3, address="10.0.0.3", links={"1": "10.1.0.3"}),
        Node(name="pve-b", nodeid=1, address="10.0.0.1", links={"1": "10.1.0.1"}),
    ]


# --- Format and validation (no database) ---------------------------------------------------


def test_three_node_golden_text():
    config, nodes = _config(), _three_nodes()
    corosync_conf.validate(config, nodes)
    assert corosync_conf.render(config, nodes) == GOLDEN
    assert corosync_conf.parse_config_version(GOLDEN) == 3


def test_corosync_accepts_the_rendered_file(tmp_path):
    """``corosync -t`` parses the file as the daemon would (it needs a local address and the key)."""
    key = tmp_path / "authkey"
    key.write_bytes(os.urandom(256))
    key.chmod(0o600)
    nodes = _three_nodes()
    nodes[0].address = "127.0.0.1"
    good = corosync_conf.render(_config(totem={**corosync_conf.DEFAULT_TOTEM, "keyfile": str(key)}), nodes)
    conf = tmp_path / "corosync.conf"
    conf.write_text(good)
    result = subprocess.run(["corosync", "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    conf.write_text(good.replace("token_coefficient: 125", "token_coefficient: soon"))
    result = subprocess.run(["corosync", "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "token_coefficient" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster_name": "no_underscores"}, "invalid cluster name"),
        ({"cluster_name": "sixteen-chars-xx"}, "invalid cluster name"),
        ({"sections": {"quorum": {"two_node": 1}}}, "'quorum' cannot be set"),
        ({"totem": {"config_version": 9}}, "set by the cluster"),
        ({"totem": {"token": "3000\n}"}}, "invalid value"),
        ({"interfaces": {"8": {}}}, "is not 0..7"),
        ({"interfaces": {"0": {}, "1": {}, "2": {}}}, "do not match"),
    ],
)
def test_validation_refuses(change, message):
    with pytest.raises(ValueError, match=message):
        corosync_conf.validate(_config(**change), _three_nodes())


def test_validation_refuses_a_shared_address_or_nodeid():
    nodes = _three_nodes()
    nodes[1].links = {"1": "10.1.0.2"}
    with pytest.raises(ValueError, match="already used"):
        corosync_conf.validate(_config(), nodes)
    nodes = _three_nodes()
    nodes[1].nodeid = 2
    with pytest.raises(ValueError, match="nodeid 2"):
        corosync_conf.validate(_config(), nodes)


@pytest.mark.parametrize(
    ("address", "links"),
    [("pve-a.example.com", None), ("10.0.0.3\nring1_addr: 10.9.9.9", None), (None, {"1": "10.1.0.3 }"})],
)
def test_validation_refuses_anything_but_an_ip_address(address, links):
    nodes = _three_nodes()
    if address is not None:
        nodes[1].address = address
    if links is not None:
        nodes[1].links = links
    with pytest.raises(ValueError, match="an IP address is needed"):
        corosync_conf.validate(_config(), nodes)


# --- The host copy ---------------------------------------------------------------------------


def test_install_only_when_the_version_rises(tmp_path):
    target = tmp_path / "etc" / "corosync.conf"
    reloads: list[int] = []
    v3 = GOLDEN
    v2 = GOLDEN.replace("config_version: 3", "config_version: 2").replace("token_coefficient: 125", "token: 3000")
    v4 = GOLDEN.replace("config_version: 3", "config_version: 4")

    assert corosync_conf.install(v3, target, reload=lambda: reloads.append(1)) is True
    assert target.read_text() == v3 and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert reloads == []  # a first file: nothing was running on an old one
    assert corosync_conf.install(v3, target, reload=lambda: reloads.append(1)) is False
    assert corosync_conf.install(v2, target, reload=lambda: reloads.append(1)) is False  # never a downgrade
    same_version = v3.replace("token_coefficient: 125", "token_coefficient: 100")
    assert corosync_conf.install(same_version, target, reload=lambda: reloads.append(1)) is False
    assert target.read_text() == v3 and reloads == []
    assert corosync_conf.install(v4, target, reload=lambda: reloads.append(1)) is True
    assert target.read_text() == v4 and reloads == [1]
    assert sorted(p.name for p in target.parent.iterdir()) == ["corosync.conf"]


def test_install_is_atomic(tmp_path, monkeypatch):
    """A write that fails before the rename leaves the old file whole and no temporary file behind."""
    target = tmp_path / "corosync.conf"
    target.write_text(GOLDEN)

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(replicator_files.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        corosync_conf.install(GOLDEN.replace("config_version: 3", "config_version: 4"), target)
    assert target.read_text() == GOLDEN
    assert [p.name for p in tmp_path.iterdir()] == ["corosync.conf"]


def test_parse_config_version_ignores_comments():
    assert corosync_conf.parse_config_version("totem {\n  # config_version: 9\n  config_version: 4\n}\n") == 4
    assert corosync_conf.parse_config_version("totem {\n  version: 2\n}\n") == 0


def test_a_failing_reload_is_logged_not_raised(monkeypatch, caplog):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert corosync_conf.reload_corosync() is False
    assert "corosync-cfgtool -R failed" in caplog.text


# --- Through the replicator: bumps in the same change set, the tree file and the host copy ----


@pytest.fixture
def host_conf(replicator) -> Path:
    """The session replicator's copy target, checked in its real environment before any cluster exists."""
    assert replicator.process is not None
    environ = Path(f"/proc/{replicator.process.pid}/environ").read_bytes().split(b"\0")
    assert f"PVE_COROSYNC_CONF={HOST_CONF}".encode() in environ, "replicator would write the real corosync.conf"
    return HOST_CONF


@pytest.fixture
def clustered(host_conf):
    """Make the session node a cluster member for one test, then standalone again."""
    testnode = Node.objects.using("cluster").get(name="testnode")
    original = (testnode.address, testnode.links, testnode.ssl_fingerprint)
    yield host_conf
    CorosyncConfig.objects.using("cluster").filter(id="corosync").delete()
    Node.objects.using("cluster").filter(name__startswith="cc-").delete()
    testnode = Node.objects.using("cluster").get(name="testnode")
    testnode.address, testnode.links, testnode.ssl_fingerprint = original
    testnode.save()
    host_conf.unlink(missing_ok=True)
    _sync()


def _sync() -> None:
    client.wait_mirror(int(client.status()["version"]))


def _row() -> CorosyncConfig:
    return CorosyncConfig.objects.using("cluster").get(id="corosync")


def test_every_nodelist_change_bumps_config_version(clustered, etc_dir):
    assert not (etc_dir / "corosync.conf").exists()
    assert corosync_conf.create_cluster("testclu") == 1
    _sync()
    tree = (etc_dir / "corosync.conf").read_text()
    assert "  cluster_name: testclu\n  config_version: 1\n" in tree
    assert "    name: testnode\n" in tree and "ring0_addr: 127.0.0.1\n" in tree
    assert clustered.read_text() == tree

    added = Node(name="cc-two", nodeid=900, address="127.0.0.2")
    assert corosync_conf.save_nodes(added) == 2
    assert added.version == _row().version  # the node and the bump are one change set
    changed = Node.objects.using("cluster").get(name="cc-two")
    changed.address = "127.0.0.3"
    assert corosync_conf.save_nodes(changed) == 3
    changed.links = {"0": "127.0.0.4"}
    assert corosync_conf.save_nodes(changed) == 4
    _sync()
    assert (
        "    name: cc-two\n    nodeid: 900\n    quorum_votes: 1\n    ring0_addr: 127.0.0.4\n" in clustered.read_text()
    )
    assert corosync_conf.delete_nodes("cc-two") == 5
    _sync()
    host = clustered.read_text()
    assert "cc-two" not in host and "config_version: 5\n" in host
    assert host == (etc_dir / "corosync.conf").read_text()


def test_unrelated_changes_do_not_bump(clustered, etc_dir):
    corosync_conf.create_cluster("testclu")
    testnode = Node.objects.using("cluster").get(name="testnode")
    testnode.ssl_fingerprint = "AA:BB"
    assert corosync_conf.save_nodes(testnode) == 1
    datacenter = ClusterSettings.objects.using("cluster").get(id="datacenter")
    datacenter.options = {**datacenter.options, "console": "html5"}
    datacenter.save()
    assert corosync_conf.update_options(totem={"token_coefficient": 125}) == 1
    _sync()
    assert _row().config_version == 1 and "config_version: 1\n" in (etc_dir / "corosync.conf").read_text()
    assert corosync_conf.update_options(totem={"token": 3000}) == 2
    assert corosync_conf.update_options(totem={"token": None}) == 3
    assert "token" not in _row().totem


def test_concurrent_changes_cannot_take_the_same_version(clustered):
    corosync_conf.create_cluster("testclu")
    first, second = _row(), _row()
    first.totem = {**first.totem, "token": 2000}
    second.totem = {**second.totem, "token": 4000}
    assert corosync_conf.update_corosync(first) == 2
    with pytest.raises(ConflictError):
        corosync_conf.update_corosync(second)
    assert _row().totem["token"] == 2000


def test_an_invalid_change_writes_nothing(clustered):
    corosync_conf.create_cluster("testclu")
    version = int(client.status()["version"])
    with pytest.raises(ValueError, match="already used"):
        corosync_conf.save_nodes(Node(name="cc-dup", nodeid=901, address="127.0.0.1"))
    assert int(client.status()["version"]) == version
    assert not Node.objects.using("cluster").filter(name="cc-dup").exists()


def test_the_host_copy_is_never_downgraded(clustered, etc_dir):
    corosync_conf.create_cluster("testclu")
    _sync()
    newer = clustered.read_text().replace("config_version: 1\n", "config_version: 50\n")
    clustered.write_text(newer)
    assert corosync_conf.update_options(totem={"token": 3000}) == 2
    _sync()
    assert "config_version: 2\n" in (etc_dir / "corosync.conf").read_text()
    assert clustered.read_text() == newer


def test_a_node_outside_the_nodelist_never_writes_the_host_file(clustered, etc_dir):
    corosync_conf.create_cluster("testclu")
    testnode = Node.objects.using("cluster").get(name="testnode")
    _sync()
    clustered.unlink()
    # Render as another node would see it: testnode's name is not in its nodelist.
    text, members = corosync_conf.render_current()  # type: ignore[misc]
    assert corosync_conf.sync_host(text, members - {testnode.name}) is False
    assert not clustered.exists()


# --- A real corosync reloads the copy ------------------------------------------------------------


def _host_conf_is_the_labs(cluster: LabCluster) -> None:
    """node1's replicator copies corosync.conf to the file its lab corosync runs on."""
    cluster.nodes[0].env["PVE_COROSYNC_CONF"] = str(cluster.nodes[0].directory / "corosync.conf")


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        1, name="ccconf", tag=f"k{os.getpid() % 100000}", cluster_name="cclab", prepare=_host_conf_is_the_labs
    )


def _probe(lab: LabCluster, *args: str) -> dict:
    node = lab.nodes[0]
    process = lab.run(
        node,
        [sys.executable, str(PROBE), *args],
        env={**os.environ, **node.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return json.loads(stdout)


def test_a_higher_version_is_copied_and_reloaded_by_corosync(lab):
    node = lab.nodes[0]
    conf = node.directory / "corosync.conf"
    lab_conf = conf.read_text()
    created = _probe(lab, "create", "cclab")
    # Version 1 is what corosync already runs: the lab's own file is kept, nothing reloaded.
    assert created == {"version": 1, "cmap": {"config_version": 1, "token": 1000}}
    assert conf.read_text() == lab_conf
    bumped = _probe(lab, "bump", "2000")
    assert bumped == {"version": 2, "cmap": {"config_version": 2, "token": 2000}}
    tree = (node.directory / "etc" / "pve" / "corosync.conf").read_text()
    assert conf.read_text() == tree and "  token: 2000\n" in tree and "ring0_addr: 10.213.0.1\n" in tree
