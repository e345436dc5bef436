"""QDevice: a two-node lab cluster stays writable with one node down through corosync-qnetd's vote.

Real corosync, corosync-qnetd (its own namespace on the lab bridge) and corosync-qdevice (one per
node namespace, with its own /etc/corosync); ``pvecm qdevice`` runs inside node namespaces and
reaches the other hosts through the lab's namespace runner (``PVE_LAB_HOSTS``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.corosync import conf as corosync_conf
from cluster.corosync import qdevice
from cluster.corosync import status as corosync_status
from cluster.lab import netns
from cluster.lab.cluster import LabCluster, LabNode
from cluster.lab.qdevice import LabQnetd, node_host, qdevice_pid, write_hosts
from cluster.models import CorosyncConfig, Node
from tests.cluster.replication import Ledger, pool_op, pools, status, submit, wait_converged, wait_for
from tests.lab_fixture import running_lab

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent.parent
PROBE = Path(__file__).with_name("corosync_conf_probe.py")


def _probe_create(lab: LabCluster) -> None:
    """Give the lab's replicated database the corosync identity its corosync already runs (version 1)."""
    node = lab.nodes[0]
    process = lab.run(
        node,
        [sys.executable, str(PROBE), "create", lab.cluster_name],
        env={**os.environ, **node.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


@pytest.fixture(scope="module")
def lab(lab_cluster):
    cluster = lab_cluster(2, name="qdevice", tag=f"d{os.getpid() % 100000}")
    qnetd = LabQnetd(cluster)
    try:
        qnetd.up()
        hosts = write_hosts(cluster, qnetd)
        for node in cluster.nodes:
            node.env["PVE_LAB_HOSTS"] = str(hosts)
        _probe_create(cluster)
        for node in cluster.nodes:
            wait_for(lambda n=node: (n.directory / "etc" / "pve" / "corosync.conf").exists(), 30, what="tree")
        yield cluster
    finally:
        qnetd.down()  # before the lab's teardown, as qnetd sits on its bridge
    assert qnetd.namespace not in netns.namespaces()


@pytest.fixture
def solo(tmp_path_factory):
    """A one-node cluster (an odd node count), gone before the two-node lab works."""
    directory = tmp_path_factory.mktemp("qdsolo")
    with running_lab(directory, 1, tag=f"s{os.getpid() % 100000}", cluster_name="solo") as cluster:
        _probe_create(cluster)
        yield cluster


def pvecm(lab: LabCluster, node: LabNode, *args: str) -> subprocess.CompletedProcess:
    process = lab.run(
        node,
        [sys.executable, str(REPO / "manage.py"), "pvecm", *args],
        env={**os.environ, **node.env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def quorumtool(lab: LabCluster, node: LabNode) -> str:
    """``corosync-quorumtool -s`` in the node's namespace (quick: no Django start)."""
    process = lab.run(node, ["corosync-quorumtool", "-s"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process.communicate(timeout=30)[0]


def host_conf(node: LabNode) -> str:
    """The corosync.conf this node's corosync reads (its replicator's host copy)."""
    return (node.directory / "corosync.conf").read_text()


def nss_dir(node: LabNode) -> Path:
    """The node's /etc/corosync/qdevice as the lab mounts it."""
    return node.directory / "qdevice-host" / "etc-corosync" / "qdevice"


def snapshot_state(lab: LabCluster) -> list[tuple[str, list[tuple[str, int]]]]:
    """What a refused command must leave alone: each node's corosync.conf and its NSS database files."""
    return [
        (host_conf(n), sorted((str(p.relative_to(nss_dir(n))), p.stat().st_mtime_ns) for p in nss_dir(n).rglob("*")))
        for n in lab.nodes
    ]


# --- Without a lab: rendering, validation, formats ------------------------------------------------


def _two_nodes() -> list[Node]:
    return [Node(name="a", nodeid=1, address="10.0.0.1"), Node(name="b", nodeid=2, address="10.0.0.2")]


def test_the_device_section_is_rendered_inside_quorum_sorted():
    config = CorosyncConfig(
        cluster_name="c", interfaces={"0": {}}, quorum_device=qdevice.device_section("10.9.9.9", "ffsplit")
    )
    text = corosync_conf.render(config, _two_nodes(), config_version=5)
    assert (
        "quorum {\n  device {\n    model: net\n    net {\n      algorithm: ffsplit\n      host: 10.9.9.9\n"
        "      tls: on\n    }\n    votes: 1\n  }\n  provider: corosync_votequorum\n}\n"
    ) in text
    assert "votes" not in str(qdevice.device_section("10.9.9.9", "lms"))


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"model": "disk", "votes": 1, "net": {"host": "h"}}, "only 'net'"),
        ({"model": "net", "net": {"host": "h", "algorithm": "ffsplit"}}, "exactly 1 vote"),
        ({"model": "net", "votes": 2, "net": {"host": "h"}}, "exactly 1 vote"),
        ({"model": "net", "votes": 1, "net": {}}, "host"),
        ({"model": "net", "votes": 1, "net": {"host": "a b"}}, "invalid host"),
        ({"model": "net", "votes": 1, "net": {"host": "h", "tls": "maybe"}}, "tls"),
        ({"model": "net", "votes": 1, "net": {"host": "h", "algorithm": "2nodelms"}}, "algorithm"),
        ({"model": "net", "votes": 1, "net": {"host": "h"}, "heuristics": {}}, "unknown keys"),
        ({"model": "net", "votes": 1, "net": {"host": "h}\nquorum {"}}, "invalid value"),
    ],
)
def test_invalid_device_sections_are_refused(device, message):
    config = CorosyncConfig(cluster_name="c", interfaces={"0": {}}, quorum_device=device)
    with pytest.raises(ValueError, match=message):
        corosync_conf.validate(config, _two_nodes())


def test_nodes_are_reached_on_their_link_in_the_given_network():
    nodes = _two_nodes()
    nodes[1].links = {"1": "192.168.5.2"}
    nodes[0].links = {"1": "192.168.5.1"}
    assert qdevice.node_addresses(nodes) == {"a": "10.0.0.1", "b": "10.0.0.2"}
    assert qdevice.node_addresses(nodes, "192.168.5.0/24") == {"a": "192.168.5.1", "b": "192.168.5.2"}
    with pytest.raises(qdevice.QdeviceError, match=r"node 'a' in 172\.16\.0\.0/12"):
        qdevice.node_addresses(nodes, "172.16.0.0/12")
    with pytest.raises(qdevice.QdeviceError, match="CIDR"):
        qdevice.node_addresses(nodes, "not-a-network")
    with pytest.raises(qdevice.QdeviceError, match="IP address"):
        qdevice.check_address("qnetd.example.org")


def _status(**changes: object) -> corosync_status.ClusterStatus:
    members = [
        corosync_status.MemberStatus(1, 1, "a", "10.0.0.1", True, "A,V,NMW"),
        corosync_status.MemberStatus(2, 1, "b", "10.0.0.2", False, "A,V,NMW"),
    ]
    fields = dict(
        name="c", config_version=4, transport="knet", secure_auth=True, local_nodeid=1, ring_id="1.8",
        quorate=True, expected_votes=3, highest_expected=3, total_votes=3, quorum=2, two_node=False,
        wait_for_all=False, members=members, flags=2 | 64 | 128 | 256, qdevice_votes=1, qdevice_name="Qdevice",
    )  # fmt: skip
    fields.update(changes)
    return corosync_status.ClusterStatus(**fields)  # type: ignore[arg-type]


def test_status_and_nodes_formats_with_a_qdevice():
    text = corosync_status.format_status(_status(), now=0)
    assert "Flags:            Quorate Qdevice\n" in text
    assert text.endswith(
        "    Nodeid      Votes    Qdevice Name\n"
        "0x00000001          1    A,V,NMW 10.0.0.1 (local)\n"
        "0x00000002          1    A,V,NMW 10.0.0.2\n"
        "0x00000000          1            Qdevice\n"
    )
    assert corosync_status.format_nodes(_status()).endswith(
        "    Nodeid      Votes    Qdevice Name\n"
        "         1          1    A,V,NMW a (local)\n"
        "         2          1    A,V,NMW b\n"
        "         0          1            Qdevice\n"
    )
    # this node's device does not vote: shown with 0 votes and its configured votes
    lone = _status(members=[corosync_status.MemberStatus(2, 1, "b", "10.0.0.2", True, "A,NV,NMW")], flags=64 | 128)
    assert corosync_status.format_status(lone).endswith(
        "0x00000002          1   A,NV,NMW 10.0.0.2 (local)\n0x00000000          0            Qdevice (votes 1)\n"
    )
    plain = _status(members=[corosync_status.MemberStatus(1, 1, "a", "10.0.0.1", True, "NR")], flags=2)
    assert corosync_status.format_status(plain).endswith(
        "    Nodeid      Votes Name\n0x00000001          1 10.0.0.1 (local)\n"
    )
    assert "Flags:            Quorate\n" in corosync_status.format_status(plain)


# --- A real one-node cluster: odd node count ------------------------------------------------------


def test_an_odd_node_count_is_refused_without_force(solo):
    node = solo.nodes[0]
    before = host_conf(node)
    result = pvecm(solo, node, "qdevice", "setup", "10.213.0.250")
    assert result.returncode != 0
    assert "Clusters with an odd node count are not officially supported!" in result.stderr
    assert host_conf(node) == before
    assert not nss_dir(node).exists()
    assert "device" not in (node.directory / "etc" / "pve" / "corosync.conf").read_text()
    result = pvecm(solo, node, "qdevice", "remove")
    assert result.returncode != 0 and result.stderr.strip().endswith("No QDevice configured!")
    assert host_conf(node) == before


# --- A real two-node cluster with qnetd -----------------------------------------------------------


def test_setup_adds_the_device_on_every_node_and_three_votes(lab):
    first, second = lab.nodes
    before = corosync_conf.parse_config_version(host_conf(first))
    result = pvecm(lab, first, "qdevice", "setup", "10.213.0.250", "--network", "10.213.0.0/24")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "INFO: copy and import pk12 cert to all nodes" in result.stdout
    for node in lab.nodes:
        text = host_conf(node)
        assert corosync_conf.parse_config_version(text) == before + 1
        assert "  device {\n    model: net\n    net {\n      algorithm: ffsplit\n      host: 10.213.0.250\n" in text
        assert qdevice_pid(node_host(node)) is not None
        assert (nss_dir(node) / "net" / "nssdb" / "cert9.db").exists()

    wait_for(lambda: all(quorumtool(lab, n).count("A,V,NMW") == 2 for n in lab.nodes), 60, interval=0.3, what="votes")
    text = pvecm(lab, second, "status").stdout
    assert "Flags:            Quorate Qdevice\n" in text
    assert "Expected votes:   3\n" in text and "Total votes:      3\n" in text
    assert "    Nodeid      Votes    Qdevice Name\n" in text
    assert "0x00000001          1    A,V,NMW 10.213.0.1\n" in text
    assert "0x00000000          1            Qdevice\n" in text


def test_a_second_setup_is_refused_and_changes_nothing_unless_forced(lab):
    first, second = lab.nodes
    before = snapshot_state(lab)
    result = pvecm(lab, first, "qdevice", "setup", "10.213.0.250")
    assert result.returncode != 0 and "QDevice already configured!" in result.stderr
    assert snapshot_state(lab) == before

    old_pids = [qdevice_pid(node_host(n)) for n in lab.nodes]
    result = pvecm(lab, second, "qdevice", "setup", "10.213.0.250", "--force")
    assert result.returncode == 0, result.stderr + result.stdout
    assert [host_conf(n) for n in lab.nodes] == [conf for conf, _files in before]  # the same section: no bump
    new_pids = [qdevice_pid(node_host(n)) for n in lab.nodes]
    assert None not in new_pids and not set(new_pids) & set(old_pids)  # new certificates, restarted daemons
    assert snapshot_state(lab) != before
    wait_for(lambda: all(quorumtool(lab, n).count("A,V,NMW") == 2 for n in lab.nodes), 60, interval=0.3, what="votes")


def test_one_node_down_the_other_stays_quorate_and_writable(lab):
    ledger = Ledger()
    first, second = lab.nodes
    assert ledger.write(first, "qd-before")["ok"]
    lab.partition(second)
    wait_for(lambda: not status(second).get("quorate"), 30, what="node2 alone not quorate")
    wait_for(lambda: status(first).get("quorate") and status(first).get("synced"), 60, what="node1 quorate via qnetd")
    result = ledger.write(first, "qd-while-node2-down", "written with one node")
    assert result["ok"], result
    assert submit(second, [pool_op("qd-refused")])["code"] == "not_quorate"
    text = quorumtool(lab, first)
    assert "Quorate:          Yes\n" in text and "Total votes:      2\n" in text
    # node2's corosync shows its lone membership once its own sync (waiting for its device) ends
    wait_for(lambda: "A,NV,NMW node2 (local)" in quorumtool(lab, second), 40, interval=0.3, what="node2 no vote")
    assert "Quorate:          No\n" in quorumtool(lab, second)

    lab.heal()
    sums = wait_converged(lab, timeout=90)
    assert ledger.missing(second) == [] and "qd-refused" not in pools(second)
    assert sums["version"] == status(second)["version"]


def test_remove_drops_the_device_and_a_lone_node_is_no_longer_quorate(lab):
    first, second = lab.nodes
    before = corosync_conf.parse_config_version(host_conf(first))
    result = pvecm(lab, second, "qdevice", "remove")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Removed Qdevice." in result.stdout
    for node in lab.nodes:
        text = host_conf(node)
        assert corosync_conf.parse_config_version(text) == before + 1
        assert "device" not in text and "quorum {\n  provider: corosync_votequorum\n}\n" in text
        assert qdevice_pid(node_host(node)) is None
        assert not nss_dir(node).exists()
    assert "Qdevice" not in quorumtool(lab, first)

    lab.partition(second)
    wait_for(lambda: not status(first).get("quorate"), 30, what="node1 alone not quorate")
    assert submit(first, [pool_op("qd-after-remove")])["code"] == "not_quorate"
    lab.heal()
    wait_converged(lab, timeout=90)
    assert Ledger().write(first, "qd-end")["ok"]
    wait_converged(lab)
