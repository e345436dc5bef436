"""QDevice in the lab: a corosync-qnetd arbiter in its own namespace, and commands "on a host" run in namespaces.

The certutil tools and both daemons hard-code ``/etc/corosync/qdevice``, ``/etc/corosync/qnetd``
and ``/run/corosync-q*``; all lab hosts share one filesystem, so every command run for a lab host
gets its own mount namespace where that host's directories are bind-mounted over those paths.
``NamespaceRunner`` does that for the addresses of a hosts file (``PVE_LAB_HOSTS``), so
``pvecm qdevice`` drives lab hosts exactly as it drives real ones over SSH.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.corosync.qdevice import CommandRunner, QdeviceError
from cluster.lab import netns
from cluster.lab.cluster import SUBNET, LabCluster, LabNode, terminate_all

QNETD_ADDRESS = f"{SUBNET}.250"
QNETD_PORT = 5403
# Per host: its /etc/corosync and the daemons' runtime directories; /run itself is a private tmpfs.
HOST_SCRIPT = (
    'root="$1"; shift; '
    'mkdir -p "$root/etc-corosync" "$root/run-qdevice" "$root/run-qnetd" && '
    'mount --bind "$root/etc-corosync" /etc/corosync && '
    "mount -t tmpfs none /run && mkdir /run/corosync-qdevice /run/corosync-qnetd && "
    'mount --bind "$root/run-qdevice" /run/corosync-qdevice && '
    'mount --bind "$root/run-qnetd" /run/corosync-qnetd && '
    'exec "$@"'
)
QDEVICE_PIDFILE = "run-qdevice/corosync-qdevice.pid"


@dataclass(frozen=True)
class LabHost:
    """One address of the lab: its network namespace and the directory holding its private paths."""

    namespace: str
    root: Path


def host_argv(host: LabHost, argv: Sequence[str]) -> list[str]:
    """``argv`` run in ``host``'s network namespace with its own /etc/corosync and /run."""
    return [
        "ip",
        "netns",
        "exec",
        host.namespace,
        "unshare",
        "-m",
        "sh",
        "-c",
        HOST_SCRIPT,
        "sh",
        str(host.root),
        *argv,
    ]


class NamespaceRunner(CommandRunner):
    """Runs commands for lab addresses inside their namespaces; qdevice as a daemon whose pid file is readable here."""

    def __init__(self, hosts: dict[str, LabHost]) -> None:
        self.hosts = hosts

    @classmethod
    def load(cls, path: Path) -> NamespaceRunner:
        """From a hosts file written by ``write_hosts``."""
        raw = json.loads(Path(path).read_text())
        return cls({address: LabHost(entry["namespace"], Path(entry["root"])) for address, entry in raw.items()})

    def host(self, host: str) -> LabHost:
        try:
            return self.hosts[host]
        except KeyError:
            raise QdeviceError(f"{host}: not a lab host ({', '.join(sorted(self.hosts))})") from None

    def run(
        self, host: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(host_argv(self.host(host), argv), input=input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise QdeviceError(f"{host}: {' '.join(argv)} timed out after {timeout} s") from exc

    def start_qdevice(self, host: str) -> None:
        """``corosync-qdevice -f`` in the host's namespace, detached (it outlives ``pvecm``), logging to qdevice.log."""
        lab_host = self.host(host)
        if qdevice_pid(lab_host) is not None:
            return
        lab_host.root.mkdir(parents=True, exist_ok=True)
        with open(lab_host.root / "qdevice.log", "ab") as log:
            subprocess.Popen(
                host_argv(lab_host, ["corosync-qdevice", "-f"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while qdevice_pid(lab_host) is None:
            if time.monotonic() > deadline:
                tail = (lab_host.root / "qdevice.log").read_text(errors="replace")[-1500:]
                raise QdeviceError(f"{host}: corosync-qdevice did not start: {tail}")
            time.sleep(0.05)

    def stop_qdevice(self, host: str) -> None:
        """SIGTERM the host's corosync-qdevice (it unregisters from votequorum) and wait until it is gone."""
        pid = qdevice_pid(self.host(host))
        if pid is not None:
            terminate_all([pid], 10)


def qdevice_pid(host: LabHost) -> int | None:
    """The pid of the host's running corosync-qdevice, from its lock file (None if it does not run)."""
    try:
        pid = int((host.root / QDEVICE_PIDFILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z" or b"corosync-qdevice" not in cmdline:
        return None
    return pid


def node_host(node: LabNode) -> LabHost:
    """A lab node as a qdevice host: its namespace, its private /etc/corosync and /run under its directory."""
    return LabHost(node.namespace, node.directory / "qdevice-host")


class LabQnetd:
    """corosync-qnetd in its own namespace on the lab bridge, with its own NSS database (CA made at start)."""

    def __init__(self, lab: LabCluster, address: str = QNETD_ADDRESS) -> None:
        self.lab = lab
        self.address = address
        self.namespace = f"pvelab{lab.tag}q"
        self.port = f"pl{lab.tag}q"
        self.host = LabHost(self.namespace, lab.directory / "qnetd")
        self.process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.host.root / "qnetd.log"

    def up(self, timeout: float = 30) -> None:
        """Attach the namespace, create the CA as the Debian package does at install, start qnetd, wait for its port."""
        netns.attach_node(self.lab.bridge_ns, self.namespace, self.port, f"{self.address}/24")
        self.host.root.mkdir(parents=True, exist_ok=True)
        init = subprocess.run(
            host_argv(self.host, ["corosync-qnetd-certutil", "-i"]), capture_output=True, text=True, timeout=60
        )
        if init.returncode != 0:
            raise RuntimeError(f"corosync-qnetd-certutil -i failed: {init.stdout}{init.stderr}")
        self.start(timeout)

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                host_argv(self.host, ["corosync-qnetd", "-f"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"corosync-qnetd did not start: {self.log_path.read_text(errors='replace')[-1500:]}")
            time.sleep(0.1)

    def _listening(self) -> bool:
        listing = subprocess.run(
            ["ip", "netns", "exec", self.namespace, "ss", "-Htln", f"sport = :{QNETD_PORT}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return bool(listing.stdout.strip())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def down(self) -> None:
        """Stop qnetd and anything else in its namespace; remove the namespace (and so its veth pair)."""
        self.stop()
        terminate_all(netns.pids(self.namespace), 10)
        netns.delete(self.namespace)


def lab_hosts(lab: LabCluster, qnetd: LabQnetd) -> dict[str, LabHost]:
    hosts = {node.address: node_host(node) for node in lab.nodes}
    hosts[qnetd.address] = qnetd.host
    return hosts


def write_hosts(lab: LabCluster, qnetd: LabQnetd) -> Path:
    """The hosts file a lab node's ``PVE_LAB_HOSTS`` names: address -> namespace and private root."""
    path = lab.directory / "qdevice-hosts.json"
    hosts = {address: {"namespace": h.namespace, "root": str(h.root)} for address, h in lab_hosts(lab, qnetd).items()}
    path.write_text(json.dumps(hosts, indent=1, sort_keys=True))
    return path


def stop_all_qdevices(lab: LabCluster) -> None:
    """Stop every node's corosync-qdevice (teardown; ``LabCluster.teardown`` also ends them by namespace)."""
    terminate_all([pid for node in lab.nodes if (pid := qdevice_pid(node_host(node))) is not None], 10)
