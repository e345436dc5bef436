"""The pvecm workflow end to end on three standalone lab nodes (whole node runners, real sshd, real corosync).

Node 1 creates the cluster, node 2 joins over SSH (after refused attempts that change nothing,
and after a join killed half way that leaves the one-node cluster writable), node 3 joins
through the API after a join killed half way, then node 3 is deleted and cannot write, and the
remaining two-node cluster is read-only with a node down until ``expected 1``. A node added by
addnode counts no vote until it has joined. The tests of this module run in order and share the lab.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from cluster.lab import netns, services, standalone
from cluster.lab.cluster import LabCluster
from tests.cluster.lifecycle import api, authorize, host_key_fingerprint, login, manage, tls_fingerprint
from tests.cluster.replication import pool_op, query, status, submit, wait_converged, wait_for

pytestmark = pytest.mark.slow
PASSWORD = "lifecycle-root-pw"


def _web_on_node_addresses(cluster: LabCluster) -> None:
    for node in cluster.nodes:
        node.env.update(services.web_environment(node.address))


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        3,
        name="lifecycle",
        root_password=PASSWORD,
        env={"PVE_FAULT_INJECTION": "1", "PVE_LOG_LEVEL": "INFO"},
        up=standalone.up_standalone,
        prepare=_web_on_node_addresses,
        kind="node",
        timeout=180,
    )


def conf_text(node) -> str:
    path = node.directory / "corosync" / "corosync.conf"
    return path.read_text() if path.exists() else ""


def members(node) -> list[str]:
    return sorted(query(node, "SELECT name FROM cluster_node"))


def quorum_line(lab, node, label: str) -> str:
    """One line of ``pvecm status`` on ``node`` (``Expected votes:   2``), with the pending joins after it."""
    shown = manage(lab, node, "pvecm", "status")
    if shown.returncode != 0:
        return f"pvecm status failed: {shown.stdout}{shown.stderr}"
    line = next(line for line in shown.stdout.splitlines() if line.startswith(label))
    pending = shown.stdout.split("Pending joins", 1)[1] if "Pending joins" in shown.stdout else ""
    return line + "\n" + pending


def corosync_pids(node) -> set[int]:
    """The corosync processes running in the node's namespace."""
    found = set()
    for pid in netns.pids(node.namespace):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "corosync":
                found.add(pid)
    return found


def test_create_makes_node1_a_quorate_one_node_cluster(lab):
    node1 = lab.nodes[0]
    result = manage(lab, node1, "pvecm", "create", "labc")  # a clustercreate task of node1's worker, followed
    assert result.returncode == 0, result.stderr + result.stdout
    upid = result.stdout.splitlines()[0]
    assert upid.startswith("UPID:node1:") and ":clustercreate:labc:root@pam:" in upid
    assert "Cluster labc created" in result.stdout and "waiting" in result.stdout and "TASK OK" in result.stdout
    state = status(node1)
    assert state["clustered"] and state["quorate"] and state["synced"]
    assert "cluster_name: labc" in conf_text(node1) and "name: node1" in conf_text(node1)
    assert (node1.directory / "corosync" / "authkey").stat().st_mode & 0o777 == 0o400
    # the cluster, node1's entry and the audit entry are one change set
    logged = query(node1, "SELECT version, user FROM cluster_clusterlogentry WHERE msg = 'created cluster labc'")
    assert logged == [(query(node1, "SELECT version FROM cluster_corosyncconfig")[0][0], "root@pam")]
    shown = manage(lab, node1, "pvecm", "status")
    assert (
        shown.returncode == 0 and "Name:             labc" in shown.stdout and "Quorate:          Yes" in shown.stdout
    )
    again = manage(lab, node1, "pvecm", "create", "other")
    assert again.returncode != 0 and "already part of cluster 'labc'" in again.stderr


def test_refused_joins_change_nothing(lab):
    node1, node2, _node3 = lab.nodes
    before = status(node1)["version"], conf_text(node1)
    wrong_key = manage(lab, node2, "pvecm", "add", node1.address, "--ssh-fingerprint", "SHA256:" + "A" * 43)
    assert wrong_key.returncode != 0 and "not the expected" in wrong_key.stderr
    unconfirmed = manage(lab, node2, "pvecm", "add", node1.address)  # no terminal to confirm on
    assert unconfirmed.returncode != 0 and "was not confirmed" in unconfirmed.stderr
    fingerprint = host_key_fingerprint(node1)
    wrong_password = manage(
        lab,
        node2,
        "pvecm",
        "add",
        node1.address,
        "--ssh-fingerprint",
        fingerprint,
        "--password-file",
        "-",
        input="nope\n",
    )
    assert wrong_password.returncode != 0 and "authentication as root@10.213.0.1 failed" in wrong_password.stderr
    unreachable = manage(lab, node2, "pvecm", "add", "10.213.0.77", "--ssh-fingerprint", fingerprint)
    assert unreachable.returncode != 0 and "cannot" in unreachable.stderr and "10.213.0.77" in unreachable.stderr
    authorize(node1, node2)
    wrong_tls = manage(
        lab, node2, "pvecm", "add", node1.address, "--ssh-fingerprint", fingerprint, "--fingerprint", "AB" * 32
    )
    assert wrong_tls.returncode != 0 and "certificate fingerprint" in wrong_tls.stderr
    # VMID conflicts: both hold VM 100; the join lists it and is refused.
    assert manage(lab, node1, "qm", "create", "100", "--name", "clustervm").returncode == 0
    clash_vm = manage(lab, node2, "qm", "create", "100", "--name", "clash", "--scsi0", "local:0.004,format=raw")
    assert clash_vm.returncode == 0, clash_vm.stderr
    assert manage(lab, node2, "qm", "create", "201", "--name", "carried").returncode == 0
    snapshot = manage(lab, node2, "qm", "snapshot", "201", "prejoin")  # carried in with the VM
    assert snapshot.returncode == 0, snapshot.stderr + snapshot.stdout
    clash = manage(lab, node2, "pvecm", "add", node1.address, "--ssh-fingerprint", fingerprint)
    assert clash.returncode != 0 and "VMs whose IDs exist in the cluster: 100" in clash.stderr
    after = status(node1)
    assert conf_text(node1) == before[1] and after["version"] == before[0] + 1  # only VM 100 was written
    assert members(node1) == [("node1",)]
    assert not (node2.directory / "corosync" / "authkey").exists() and not status(node2)["clustered"]


MARKER = b"the clashing VM's data\n"


def volume_path(lab, node, volid: str) -> Path:
    shown = manage(lab, node, "pvesm", "path", volid)
    assert shown.returncode == 0, shown.stderr
    return Path(shown.stdout.strip())


def back_up_and_remove_the_clashing_vm(lab, node2) -> None:
    """The VMID conflict's workaround, first half: node2's VM 100 backed up to a file, then destroyed."""
    disk = volume_path(lab, node2, "local:100/vm-100-disk-0.raw")
    with disk.open("r+b") as image:
        image.write(MARKER)
    backup = manage(lab, node2, "vzdump", "100", "--storage", "local", "--compress", "zstd")
    assert backup.returncode == 0, backup.stderr + backup.stdout
    archives = list((disk.parents[2] / "dump").glob("vzdump-qemu-100-*.tar.zst"))
    assert len(archives) == 1, backup.stdout
    destroyed = manage(lab, node2, "qm", "destroy", "100", "--purge", "1")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not disk.exists()


def restore_the_clashing_vm_as_200(lab, node1, node2) -> None:
    """The workaround's second half, once node2 is a member: the archive restored as VM 200 (``--unique``)."""
    archive = next((node2.directory / "vz" / "dump").glob("vzdump-qemu-100-*.tar.zst"))
    restored = manage(lab, node2, "qmrestore", str(archive), "200", "--unique", "1", "--storage", "local")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    wait_for(lambda: query(node1, "SELECT node_id FROM vms_vm WHERE vmid = 200") == [("node2",)], 30)
    config = manage(lab, node1, "qm", "config", "200")  # read on node1: the restored config is replicated
    assert config.returncode == 0 and "name: clash" in config.stdout, config.stdout + config.stderr
    volid = next(line.split()[1].split(",")[0] for line in config.stdout.splitlines() if line.startswith("scsi0:"))
    assert volid.startswith("local:200/vm-200-disk-")
    with volume_path(lab, node2, volid).open("rb") as image:
        assert image.read(len(MARKER)) == MARKER


def test_a_join_killed_after_addnode_leaves_the_one_node_cluster_writable(lab):
    """The 1 to 2 case: node2 is in the nodelist but counts no vote, so node1 alone keeps its quorum."""
    node1, node2, _node3 = lab.nodes
    back_up_and_remove_the_clashing_vm(lab, node2)
    killed = manage(
        lab,
        node2,
        "pvecm",
        "add",
        node1.address,
        "--ssh-fingerprint",
        host_key_fingerprint(node1),
        env={"PVE_JOIN_CRASH": "after_addnode"},
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert members(node1) == [("node1",), ("node2",)] and not status(node2)["clustered"]
    # addnode reloaded node1's corosync with node2 in the nodelist before it answered
    assert "name: node2" in conf_text(node1)
    written = submit(node1, [pool_op("while-node2-joins")])
    assert written["ok"], written
    assert status(node1)["quorate"]
    assert "    name: node2\n    nodeid: 2\n    quorum_votes: 0\n" in conf_text(node1)
    expected = quorum_line(lab, node1, "Expected votes:")
    assert expected.startswith("Expected votes:   1\n") and "node2 (nodeid 2, 10.213.0.2, 1 vote(s) once joined)" in (
        expected
    ), expected


def test_node2_joins_over_ssh_and_its_vm_is_carried_in(lab):
    node1, node2, _node3 = lab.nodes
    result = manage(lab, node2, "pvecm", "add", node1.address, "--ssh-fingerprint", host_key_fingerprint(node1))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "continuing an earlier join" in result.stdout
    for step in (
        "SSH host key of",
        "restart as a cluster member",
        "Backed up",
        "Carried VM(s) 201",
        "successfully added",
    ):
        assert step in result.stdout, result.stdout
    wait_converged(lab, [node1, node2])
    assert members(node2) == [("node1",), ("node2",)]
    assert query(node1, "SELECT node_id FROM vms_vm WHERE vmid = 201") == [("node2",)]
    assert query(node2, "SELECT node_id FROM vms_vm WHERE vmid = 100") == [("node1",)]
    listed = manage(lab, node1, "qm", "listsnapshot", "201")
    assert listed.returncode == 0 and "prejoin" in listed.stdout, listed.stdout + listed.stderr
    restore_the_clashing_vm_as_200(lab, node1, node2)
    assert list((node2.directory / "backup").glob("cluster-*.json"))
    # node2 joined: its vote counts now, raised by node2 itself in a new config_version
    counted = "    name: node2\n    nodeid: 2\n    quorum_votes: 1\n"
    wait_for(lambda: counted in conf_text(node1) and counted in conf_text(node2), 30, what="node2's vote counted")
    assert conf_text(node1) == conf_text(node2)
    wait_for(lambda: quorum_line(lab, node1, "Expected votes:") == "Expected votes:   2\n", 30, interval=1)
    assert query(node2, "SELECT user FROM cluster_clusterlogentry WHERE msg LIKE 'node node2 joined the cluster%'")
    assert query(node2, "SELECT COUNT(*) FROM authz_pool WHERE poolid = 'while-node2-joins'") == [(1,)]
    # node2's certificate is now signed by the cluster CA, and every node trusts every node over SSH.
    wait_for(
        lambda: (
            (node2.directory / "etc/pve/pve-root-ca.pem").read_text()
            == (node1.directory / "etc/pve/pve-root-ca.pem").read_text()
        )
    )
    node2_key = (node2.directory / "ssh/id_ed25519.pub").read_text().split()[1]
    keys = node1.directory / "etc/pve/priv/authorized_keys"
    wait_for(lambda: node2_key in keys.read_text(), 10, what="node2's key authorized on node1")
    known = node2.directory / "etc/pve/priv/known_hosts"
    wait_for(lambda: f"node1,{node1.address} ssh-ed25519" in known.read_text(), 10, what="node1 in node2's known_hosts")


def test_join_killed_half_way_then_retried_through_the_api(lab):
    node1, _node2, node3 = lab.nodes
    authorize(node1, node3)
    killed = manage(
        lab,
        node3,
        "pvecm",
        "add",
        node1.address,
        "--ssh-fingerprint",
        host_key_fingerprint(node1),
        env={"PVE_JOIN_CRASH": "after_addnode"},
    )
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert ("node3",) in members(node1) and not status(node3)["clustered"]
    wait_for(lambda: status(node1).get("quorate"), 10, what="node1 quorate (node3 counts no vote yet)")
    expected = quorum_line(lab, node1, "Expected votes:")
    assert expected.startswith("Expected votes:   2\n") and "node3 (nodeid 3" in expected, expected
    # node3 remembered node1's host key; a different key at that address now is refused outright.
    known = node3.directory / "ssh" / "known_hosts"
    assert f"{node1.address} ssh-ed25519" in known.read_text()
    other_key = (lab.nodes[1].directory / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    good = known.read_text()
    known.write_text(good.replace(good.split()[2], other_key))
    changed = manage(lab, node3, "pvecm", "add", node1.address)
    assert changed.returncode != 0 and "changed" in changed.stderr and "man-in-the-middle" in changed.stderr, (
        changed.stderr
    )
    assert not status(node3)["clustered"] and not (node3.directory / "corosync" / "authkey").exists()
    known.write_text(good)
    auth = login(lab, node3, PASSWORD)
    code, body = api(
        lab,
        node3,
        "POST",
        "/cluster/config/join",
        {"hostname": node1.address, "fingerprint": tls_fingerprint(node1), "password": PASSWORD},
        auth,
    )
    assert code == 200, body
    upid = body["data"]
    assert upid.startswith("UPID:node3:") and ":clusterjoin:" in upid
    wait_converged(lab, timeout=120)
    wait_for(lambda: quorum_line(lab, node1, "Expected votes:") == "Expected votes:   3\n", 30, interval=1)

    def serves_cluster_certificate() -> bool:
        """node3's web answers with a certificate from the cluster CA (renewed by the join, reloaded live)."""
        try:
            login(lab, node3, PASSWORD)
        except AssertionError:
            return False
        return True

    wait_for(serves_cluster_certificate, 60, interval=1, what="node3 to serve a certificate of the cluster CA")
    auth = login(lab, node3, PASSWORD)

    def finished() -> bool:
        code, answer = api(lab, node3, "GET", f"/nodes/node3/tasks/{upid}/status", auth=auth)
        return code == 200 and answer["data"]["status"] == "stopped"

    wait_for(finished, 120, interval=1, what="the join task to end")
    code, answer = api(lab, node3, "GET", f"/nodes/node3/tasks/{upid}/log", auth=auth)
    log = "\n".join(line["t"] for line in answer["data"])
    assert "continuing an earlier join" in log and log.rstrip().endswith("TASK OK"), log
    # The task is visible through another node's API too (forwarded to node3).
    node1_auth = login(lab, node1, PASSWORD)
    seen: list = []

    def forwarded() -> bool:
        """Through node1 once node1 holds node3's new certificate fingerprint (replicated with the join)."""
        seen.append(api(lab, node1, "GET", f"/nodes/node3/tasks/{upid}/status", auth=node1_auth))
        code, answer = seen[-1]
        return code == 200 and answer["data"]["exitstatus"] == "OK"

    try:
        wait_for(forwarded, 30, interval=1, what="node3's task through node1")
    except AssertionError:
        raise AssertionError(f"through node1: {seen[-3:]}") from None
    shown = manage(lab, node3, "pvecm", "nodes")
    assert shown.returncode == 0 and shown.stdout.count("node") >= 3 and "node3 (local)" in shown.stdout, (
        shown.stdout + shown.stderr
    )


def test_delnode_refusals_then_the_removed_node_cannot_write(lab):
    node1, node2, node3 = lab.nodes
    myself = manage(lab, node1, "pvecm", "delnode", "node1")
    assert myself.returncode != 0 and "Cannot delete myself" in myself.stderr
    owner = manage(lab, node1, "pvecm", "delnode", "node2")
    assert owner.returncode != 0 and "still owns VMs 200, 201" in owner.stderr
    before = int(conf_text(node1).split("config_version: ")[1].split()[0])
    old_corosync = corosync_pids(node3)
    assert old_corosync, "node3's runner runs its corosync"
    removed = manage(lab, node1, "pvecm", "delnode", "node3")
    assert removed.returncode == 0, removed.stderr
    wait_converged(lab, [node1, node2])
    assert members(node2) == [("node1",), ("node2",)]
    wait_for(lambda: "node3" not in conf_text(node2), 30, what="node3 gone from node2's corosync.conf")
    assert int(conf_text(node2).split("config_version: ")[1].split()[0]) > before
    node3_key = (node3.directory / "ssh/id_ed25519.pub").read_text().split()[1]
    authorized = node1.directory / "etc/pve/priv/authorized_keys"
    wait_for(lambda: node3_key not in authorized.read_text(), 10, what="node3's key revoked")
    known_hosts = node1.directory / "etc/pve/priv/known_hosts"
    wait_for(lambda: "node3" not in known_hosts.read_text(), 10, what="node3's host key gone from known_hosts")
    assert query(node1, "SELECT COUNT(*) FROM authz_keymaterial WHERE path LIKE 'nodes/node3/%'") == [(0,)]
    # node3 comes back (its runner restarts corosync with its old config) and cannot write.
    wait_for(lambda: corosync_pids(node3) - old_corosync, 60, what="node3's runner to restart its corosync")
    wait_for(
        lambda: status(node3).get("connected") and status(node3).get("members") == [3],
        60,
        what="node3's replicator on its restarted corosync, alone",
    )
    refused = submit(node3, [pool_op("from-removed-node")], timeout=10)
    assert refused.get("code") == "not_quorate", refused
    assert query(node1, "SELECT COUNT(*) FROM authz_pool WHERE poolid = 'from-removed-node'") == [(0,)]


def test_two_node_cluster_with_one_node_down_is_read_only_until_expected_1(lab):
    node1, node2, _node3 = lab.nodes
    lab.partition(node2)
    try:
        wait_for(lambda: not status(node1).get("quorate"), 30, what="node1 read-only without node2")
        refused = submit(node1, [pool_op("two-refused")])
        assert refused["code"] == "not_quorate"
        # The replicator is read-only at once (stalled round trip); votequorum refuses a lower
        # expected count until corosync's new membership (node1 alone) is formed.
        # votequorum's own view can lag the CPG membership the replicator reports: a refusal
        # with CS_ERR_INVALID_PARAM in that window is retried, any other error fails at once.
        wait_for(lambda: status(node1).get("members") == [1], 30, what="corosync membership without node2")
        attempts: list[subprocess.CompletedProcess[str]] = []

        def lowered() -> bool:
            attempts.append(manage(lab, node1, "pvecm", "expected", "1"))
            assert attempts[-1].returncode == 0 or "CS_ERR_INVALID_PARAM" in attempts[-1].stderr, attempts[-1].stderr
            return attempts[-1].returncode == 0

        wait_for(lowered, 30, interval=0.5, what="votequorum accepting expected 1")
        assert "split brain" in attempts[-1].stderr, attempts[-1].stderr
        wait_for(lambda: status(node1).get("quorate"), 30, what="node1 writable after expected 1")
        assert submit(node1, [pool_op("two-after-expected")])["ok"]
    finally:
        lab.heal()
    wait_converged(lab, [node1, node2], timeout=90)
    assert query(node2, "SELECT COUNT(*) FROM authz_pool WHERE poolid = 'two-after-expected'") == [(1,)]


def test_updatecerts_renews_the_node_certificate_cluster_wide(lab):
    node1, node2, _node3 = lab.nodes
    before = query(node1, "SELECT ssl_fingerprint FROM cluster_node WHERE name = 'node2'")[0][0]
    renewed = manage(lab, node2, "pvecm", "updatecerts", "--force")
    assert renewed.returncode == 0 and "new certificate for node2" in renewed.stdout, renewed.stderr
    wait_converged(lab, [node1, node2])
    after = query(node1, "SELECT ssl_fingerprint FROM cluster_node WHERE name = 'node2'")[0][0]
    assert after != before and after == tls_fingerprint(node2)
