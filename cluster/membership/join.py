"""The joining node's side of ``pvecm create`` and ``pvecm add`` (Proxmox's Setup::join and finish_join).

A node becomes a cluster member by getting the cluster's corosync authkey and corosync.conf,
emptying its replicated state (kept as a dated backup), starting corosync and restarting its
replicator, which then picks the corosync transport and receives the cluster's state in the
first sync round. Its own VMs are written back into the cluster afterwards (their ids were
checked for conflicts before anything changed).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from cluster.corosync import conf as corosync_conf
from cluster.keys import ssh_keys
from cluster.membership import guests
from cluster.membership.bootstrap import local_address
from cluster.models import ClusterLogEntry, Node
from replicator import client
from replicator.exceptions import ReplicationError
from replicator.files import atomic_write

Progress = Callable[[str], None]
PENDING = "join-pending.json"


class JoinError(Exception):
    """The join (or create) was refused or failed; the message says what to do."""


def _pending_path() -> Path:
    return Path(settings.PVE_DATA_DIR) / PENDING


def crash_point(name: str) -> None:
    """Test hook: ``PVE_JOIN_CRASH=<name>`` kills the joining process here (only with fault injection on)."""
    if settings.PVE_FAULT_INJECTION and os.environ.get("PVE_JOIN_CRASH") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def corosync_running() -> bool:
    """Whether a corosync answers on this host (network namespace): ``corosync-quorumtool -l`` succeeds."""
    try:
        result = subprocess.run(["corosync-quorumtool", "-l"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def address_configured(address: str) -> bool:
    result = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10)
    return any(f" {address}/" in line for line in result.stdout.splitlines())


def assert_joinable(*, force: bool = False) -> None:
    """Proxmox's checks before create/join; ``force`` overrides all but an existing cluster configuration."""
    config, _nodes = corosync_conf.load()
    if config is not None:
        raise JoinError(f"this node is already part of cluster {config.cluster_name!r}")
    errors = []
    if settings.PVE_COROSYNC_AUTHKEY.exists():
        errors.append(f"authentication key '{settings.PVE_COROSYNC_AUTHKEY}' already exists")
    if corosync_running():
        errors.append("corosync is already running, is this node already in a cluster?!")
    address = local_address()
    if not address_configured(address):
        errors.append(f"local node address {address} is not configured on any interface (set PVE_NODE_ADDRESS)")
    if errors and not force:
        raise JoinError("detected the following error(s):\n* " + "\n* ".join(errors))


def _replicator_status() -> dict[str, Any] | None:
    try:
        return client.status()
    except ReplicationError:
        return None


def wait_member(progress: Progress, timeout: float = 120) -> dict[str, Any]:
    """Until the restarted replicator runs over corosync, quorate, in sync and with this node's identity written."""
    deadline = time.monotonic() + timeout
    said: set[str] = set()
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = _replicator_status()
        if state is None or not state.get("clustered"):
            step = "waiting for the replicator to restart as a cluster member..."
        elif not state.get("quorate"):
            step = "waiting for quorum..."
        elif not state.get("synced"):
            step = "waiting for the cluster state to synchronise..."
        elif not state.get("bootstrapped"):
            step = "writing this node's identity (certificate, SSH keys)..."
        else:
            return state
        if step not in said:
            progress(step)
            said.add(step)
        time.sleep(0.3)
    raise JoinError(f"the node did not become a quorate, synchronised member within {timeout:.0f} s (last: {state})")


def start_corosync(progress: Progress) -> None:
    """systemd starts corosync in production; under runnode (``PVE_RUN_COROSYNC``) it starts by itself."""
    if settings.PVE_RUN_COROSYNC:
        progress("corosync starts under the node runner")
        return
    progress("starting corosync")
    result = subprocess.run(["systemctl", "restart", "corosync"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise JoinError(f"starting corosync failed: {(result.stderr or result.stdout).strip()}")


def restart_replicator(progress: Progress) -> None:
    progress("restarting the replicator as a cluster member")
    client.request({"op": "restart"})


# --- create ------------------------------------------------------------------------------


def generate_authkey(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["corosync-keygen", "-l", "-k", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise JoinError(f"corosync-keygen failed: {(result.stderr or result.stdout).strip()}")
    os.chmod(path, 0o400)


def wait_host_conf(timeout: float = 30) -> None:
    """Until the replicator has copied the rendered corosync.conf to the host path."""
    deadline = time.monotonic() + timeout
    while not Path(settings.PVE_COROSYNC_CONF).exists():
        if time.monotonic() > deadline:
            raise JoinError(f"corosync.conf was not written to {settings.PVE_COROSYNC_CONF} within {timeout:.0f} s")
        time.sleep(0.1)


def create(
    name: str, *, nodeid: int | None = None, votes: int = 1, progress: Progress = print, user: str = "root@pam"
) -> None:
    """``pvecm create NAME``: this standalone node becomes the first member of cluster ``name``."""
    assert_joinable()
    if votes < 1:
        raise JoinError("votes must be at least 1")
    try:
        corosync_conf.validate(corosync_conf.CorosyncConfig(cluster_name=name), [])
    except ValueError as exc:
        raise JoinError(str(exc)) from None
    node = Node.objects.using("cluster").filter(name=settings.PVE_NODE_NAME).first()
    if node is None:
        raise JoinError(f"node {settings.PVE_NODE_NAME} has no row yet; is the replicator running?")
    progress(f"Generating corosync authkey {settings.PVE_COROSYNC_AUTHKEY}")
    generate_authkey(settings.PVE_COROSYNC_AUTHKEY)
    progress(f"Root SSH key: {ssh_keys.fingerprint(ssh_keys.ensure_root_key())}")
    node.address = node.address or local_address()
    if nodeid is not None:
        node.nodeid = nodeid
    node.votes = votes
    try:
        with transaction.atomic(using="cluster"):  # the cluster, this node's entry and the log: one change
            corosync_conf.create_cluster(name, nodes=[node])
            ClusterLogEntry.write(f"created cluster {name}", user=user, tag="pvecm")
    except Exception:
        settings.PVE_COROSYNC_AUTHKEY.unlink(missing_ok=True)
        raise
    progress(f"Writing corosync config to {settings.PVE_COROSYNC_CONF}")
    wait_host_conf()
    start_corosync(progress)
    restart_replicator(progress)
    wait_member(progress)
    progress(f"Cluster {name} created; this node is {settings.PVE_NODE_NAME} (nodeid {node.nodeid})")


# --- join --------------------------------------------------------------------------------


def local_vms() -> list[dict[str, Any]]:
    return guests.provider().export_all()


def finish_join(answer: dict[str, Any], vms: list[dict[str, Any]], progress: Progress) -> None:
    """Install the cluster's authkey and corosync.conf, empty the state, start corosync, wait, carry VMs in."""
    try:
        authkey = base64.b64decode(answer["corosync_authkey"], validate=True)
        conf = str(answer["corosync_conf"])
    except (KeyError, ValueError, TypeError):
        raise JoinError("the cluster node's answer lacks a valid authkey or corosync.conf") from None
    if settings.PVE_NODE_NAME not in conf:
        raise JoinError(f"the corosync.conf received does not list this node ({settings.PVE_NODE_NAME})")
    pending = _pending_path()
    atomic_write(pending, json.dumps({"vms": vms}).encode(), mode=0o600)
    progress(f"Writing corosync key and config ({len(vms)} VM(s) to carry into the cluster)")
    atomic_write(settings.PVE_COROSYNC_AUTHKEY, authkey, mode=0o400)
    atomic_write(Path(settings.PVE_COROSYNC_CONF), conf.encode(), mode=0o644)
    crash_point("after_conf")
    answer = client.request({"op": "reset_for_join"}, timeout=300)
    progress(f"Backed up the node's standalone state to {answer['backup']}")
    start_corosync(progress)
    wait_member(progress)
    carry_in_vms(progress)


def carry_in_vms(progress: Progress) -> list[int]:
    """Write the VMs kept in the pending file into the cluster as this node's; returns the ids written."""
    pending = _pending_path()
    try:
        vms = json.loads(pending.read_text())["vms"]
    except FileNotFoundError:
        return []
    written = []
    provider = guests.provider()
    for entry in vms:
        if provider.exists(entry["vmid"]):
            progress(f"VM {entry['vmid']} exists in the cluster already; its config stays in the backup")
            continue
        provider.carry_in(entry["vmid"], entry["config"], settings.PVE_NODE_NAME, entry.get("snapshots"))
        written.append(entry["vmid"])
    if written:
        progress(f"Carried VM(s) {', '.join(str(v) for v in written)} into the cluster")
    pending.unlink()
    return written


def resume_if_pending(progress: Progress) -> bool:
    """A join interrupted after the node restarted as a member: finish it (carry the VMs in)."""
    config, _nodes = corosync_conf.load()
    if config is None or not _pending_path().exists():
        return False
    progress(f"resuming the interrupted join of cluster {config.cluster_name}")
    wait_member(progress)
    carry_in_vms(progress)
    return True
