"""Lab nodes that start standalone, each with its own sshd, to be clustered with ``pvecm create`` / ``pvecm add``.

All lab nodes share one filesystem, so each sshd gets its own host keys, authorized keys files
(the node's rendered ``priv/authorized_keys`` and a file the operator may add keys to, as
``ssh-copy-id`` would) and, through ``SetEnv``, the node's settings: a command run over SSH on
node 2 is a command of node 2. Each node runner supervises its own corosync
(``PVE_RUN_COROSYNC``), which waits until the node has an authkey and a corosync.conf.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cluster.lab import netns
from cluster.lab.cluster import LabCluster, LabNode

SSHD = "/usr/sbin/sshd"


def standalone_environment(node: LabNode) -> dict[str, str]:
    """Settings that make a lab node a standalone node first (auto transport, corosync under the runner)."""
    corosync_dir = node.directory / "corosync"
    return {
        "PVE_TRANSPORT": "auto",
        "PVE_RUN_COROSYNC": "1",
        "PVE_COROSYNC_CONF": str(corosync_dir / "corosync.conf"),
        "PVE_COROSYNC_AUTHKEY": str(corosync_dir / "authkey"),
        "PVE_SSH_DIR": str(node.directory / "ssh"),
        "PVE_SSH_HOST_KEY": str(node.directory / "sshd" / "ssh_host_ed25519_key.pub"),
    }


def sshd_config(node: LabNode) -> str:
    sshd = node.directory / "sshd"
    keys = f"{node.directory / 'etc' / 'pve' / 'priv' / 'authorized_keys'} {sshd / 'authorized_keys'}"
    setenv = " ".join(f'"{key}={value}"' for key, value in sorted(node.env.items()) if " " not in value)
    return (
        f"ListenAddress {node.address}\nPort 22\n"
        f"HostKey {sshd / 'ssh_host_ed25519_key'}\nPidFile {sshd / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys}\n"
        "PermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\n"
        "StrictModes no\nPrintMotd no\nSubsystem sftp internal-sftp\n"
        f"SetEnv {setenv}\n"
    )


def start_sshd(lab: LabCluster, node: LabNode) -> subprocess.Popen:
    sshd = node.directory / "sshd"
    sshd.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = sshd / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    (sshd / "authorized_keys").touch(mode=0o600)
    config = sshd / "sshd_config"
    config.write_text(sshd_config(node))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(sshd / "sshd.log", "ab")  # noqa: SIM115 (the process keeps it)
    return lab.run(node, [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)


def wait_sshd(node: LabNode, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"sshd of {node.name} exited: {(node.directory / 'sshd' / 'sshd.log').read_text()[-1000:]}"
            )
        if _bash_probe(node):
            return
        time.sleep(0.2)
    raise RuntimeError(f"sshd of {node.name} did not listen within {timeout} s")


def _bash_probe(node: LabNode) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", node.namespace, "bash", "-c", f"exec 3<>/dev/tcp/{node.address}/22"],
        capture_output=True,
    )
    return result.returncode == 0


def up_standalone(lab: LabCluster) -> dict[str, subprocess.Popen]:
    """Network, sshd per node; returns the sshd processes. Node runners are started by the caller."""
    netns.create_bridge(lab.bridge_ns)
    for node in lab.nodes:
        node.env.update(standalone_environment(node))
        node.directory.mkdir(parents=True, exist_ok=True)
        netns.attach_node(lab.bridge_ns, node.namespace, node.port, f"{node.address}/24")
    processes = {node.name: start_sshd(lab, node) for node in lab.nodes}
    for node in lab.nodes:
        wait_sshd(node, processes[node.name])
    return processes
