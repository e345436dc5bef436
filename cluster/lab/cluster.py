"""``LabCluster``: N corosync nodes on a private bridge, each in its own network namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from cluster.lab import netns, services

SUBNET = "10.213.0"
COROSYNC_SCRIPT = 'mount -t tmpfs none /run && mount --bind "$1" /var/lib/corosync && exec corosync -f -c "$2"'


def corosync_conf(
    cluster_name: str, nodes: list[tuple[int, str, str]], *, token: int = 1000, config_version: int = 1
) -> str:
    """corosync.conf in Proxmox's layout (knet, votequorum), for ``(nodeid, name, address)`` nodes.

    ``sched_rr: no``: several corosyncs at real-time priority on one small host starve the
    nodes' own processes (measured: replicated write p50 5.6 ms with it, 2.7 ms without).
    """
    node_blocks = "".join(
        f"  node {{\n    name: {name}\n    nodeid: {nodeid}\n    quorum_votes: 1\n    ring0_addr: {address}\n  }}\n"
        for nodeid, name, address in nodes
    )
    return (
        "logging {\n  debug: off\n  to_stderr: yes\n  to_syslog: no\n}\n\nsystem {\n  sched_rr: no\n}\n\n"
        f"nodelist {{\n{node_blocks}}}\n\n"
        "quorum {\n  provider: corosync_votequorum\n}\n\n"
        "totem {\n"
        f"  cluster_name: {cluster_name}\n  config_version: {config_version}\n"
        "  interface {\n    linknumber: 0\n  }\n"
        "  ip_version: ipv4-6\n  link_mode: passive\n  version: 2\n"
        f"  transport: knet\n  crypto_cipher: none\n  crypto_hash: none\n  token: {token}\n"
        "}\n"
    )


@dataclass
class LabNode:
    nodeid: int
    name: str
    namespace: str
    port: str
    address: str
    directory: Path
    corosync: subprocess.Popen | None = field(default=None, repr=False)
    service: subprocess.Popen | None = field(default=None, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "corosync.log"

    @property
    def socket_path(self) -> Path:
        """The node's replicator socket (reachable from the host: it is a file)."""
        return self.directory / "replicator.sock"


class LabState(TypedDict):
    """A lab as ``LabCluster.state()`` saves it (JSON), for ``from_state`` in another process."""

    directory: str
    size: int
    tag: str
    cluster_name: str
    root_password: str
    postgres: str | None
    pids: dict[str, int]
    service_pids: dict[str, int]


class LabCluster:
    """Build, partition, heal and tear down a lab; every namespace and process it makes it removes."""

    def __init__(
        self,
        directory: Path,
        size: int,
        *,
        tag: str | None = None,
        cluster_name: str = "lab",
        root_password: str = "lab-root-password",
        env: dict[str, str] | None = None,
        postgres: str | None = None,
    ) -> None:
        """``postgres``: a libpq URL of a PostgreSQL server on which each node gets databases of its own
        (created by ``start_services``, dropped by ``down``); SQLite files in each node's directory otherwise."""
        if not 1 <= size <= 16:
            raise ValueError("a lab has 1 to 16 nodes")
        if {services.CLUSTER_URL, services.LOCAL_URL} & set(env or {}):
            raise ValueError("lab nodes never share a database: give the server as postgres=, not a database URL")
        self.directory = directory
        self.tag = tag or f"{os.getpid() % 100000}"
        self.bridge_ns = f"pvelab{self.tag}br"
        self.cluster_name = cluster_name
        self.root_password = root_password
        self.postgres = postgres
        self.orphan_pids: dict[str, int] = {}  # processes started by another process (``from_state``)
        self.standalone = False  # nodes start unclustered (``cluster.lab.standalone``)
        self.nodes = [
            LabNode(
                nodeid=i,
                name=f"node{i}",
                namespace=f"pvelab{self.tag}n{i}",
                port=f"pl{self.tag}p{i}",
                address=f"{SUBNET}.{i}",
                directory=directory / f"node{i}",
            )
            for i in range(1, size + 1)
        ]
        for node in self.nodes:
            node.env = {
                **services.node_environment(node.directory, node.name, node.address, root_password),
                **(services.postgres_environment(postgres, f"pvelab{self.tag}_{node.name}") if postgres else {}),
                **(env or {}),
            }

    def up(self, timeout: float = 60) -> None:
        netns.create_bridge(self.bridge_ns)
        conf = corosync_conf(self.cluster_name, [(n.nodeid, n.name, n.address) for n in self.nodes])
        for node in self.nodes:
            (node.directory / "corosync-lib").mkdir(parents=True, exist_ok=True)
            (node.directory / "corosync.conf").write_text(conf)
            netns.attach_node(self.bridge_ns, node.namespace, node.port, f"{node.address}/24")
        for node in self.nodes:
            self.start_corosync(node)
        for node in self.nodes:
            self._wait_log(node, "ready to provide service", timeout)

    def start_services(self, kind: str = "replicator", timeout: float = 90) -> None:
        """Migrate the nodes' databases, start each node's replicator (or node runner), wait for sync."""
        services.prepare_databases([node.env for node in self.nodes])
        for node in self.nodes:
            node.service = services.start(node.namespace, node.env, kind)
        for node in self.nodes:
            services.wait_ready(node.socket_path, node.service, timeout)

    def start_service(self, node: LabNode, kind: str = "replicator") -> None:
        node.service = services.start(node.namespace, node.env, kind)

    def stop_service(self, node: LabNode, *, kill: bool = False) -> None:
        services.stop(node.service, kill=kill)

    def start_corosync(self, node: LabNode) -> None:
        with open(node.log_path, "ab") as log:
            node.corosync = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    node.namespace,
                    "unshare",
                    "-m",
                    "sh",
                    "-c",
                    COROSYNC_SCRIPT,
                    "sh",
                    str(node.directory / "corosync-lib"),
                    str(node.directory / "corosync.conf"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop_corosync(self, node: LabNode, *, kill: bool = False) -> None:
        process = node.corosync
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_log(self, node: LabNode, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in node.log_path.read_text(errors="replace"):
            if node.corosync is None or node.corosync.poll() is not None or time.monotonic() > deadline:
                tail = node.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"corosync on {node.name} did not get ready: {tail}")
            time.sleep(0.1)

    def partition(self, node: LabNode) -> None:
        netns.set_port(self.bridge_ns, node.port, up=False)

    def heal(self) -> None:
        for node in self.nodes:
            netns.set_port(self.bridge_ns, node.port, up=True)

    def run(self, node: LabNode, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside a node's namespace (where its corosync IPC is)."""
        return subprocess.Popen(["ip", "netns", "exec", node.namespace, *argv], **kwargs)

    def python(self, node: LabNode, script: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_python(node.namespace, script, *args, timeout=timeout)

    def state(self) -> LabState:
        """What ``from_state`` needs to find this lab again from another process."""
        return {
            "directory": str(self.directory),
            "size": len(self.nodes),
            "tag": self.tag,
            "cluster_name": self.cluster_name,
            "root_password": self.root_password,
            "postgres": self.postgres,
            "pids": {node.name: node.corosync.pid for node in self.nodes if node.corosync is not None},
            "service_pids": {node.name: node.service.pid for node in self.nodes if node.service is not None},
        }

    @classmethod
    def from_state(cls, state: LabState) -> LabCluster:
        lab = cls(
            Path(str(state["directory"])),
            int(state["size"]),
            tag=str(state["tag"]),
            cluster_name=str(state["cluster_name"]),
            root_password=str(state.get("root_password", "lab-root-password")),
            postgres=str(state["postgres"]) if state.get("postgres") else None,
        )
        pids = {f"{name}:service": int(pid) for name, pid in dict(state.get("service_pids", {})).items()}
        pids.update({name: int(pid) for name, pid in dict(state.get("pids", {})).items()})
        lab.orphan_pids = pids
        return lab

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no lab node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    def down(self) -> None:
        for node in self.nodes:
            self.stop_service(node)
        for node in self.nodes:
            self.stop_corosync(node)
        for pid in self.orphan_pids.values():
            _terminate(pid)
        for node in self.nodes:
            netns.delete(node.namespace)
        netns.delete(self.bridge_ns)
        services.drop_databases([node.env for node in self.nodes])

    @property
    def host_port(self) -> str:
        """The host end of the veth pair into the bridge (named from the tag: labs do not clash)."""
        return f"pl{self.tag}h"

    def connect_host(self) -> None:
        """Give the host an address on the lab network, so each node's portal is reachable from it."""
        netns.attach_host(self.bridge_ns, self.host_port, f"{HOST_ADDRESS}/24")

    def teardown(self, timeout: float = 60) -> None:
        """Stop node runners (they stop their children), corosync, anything left in the namespaces; remove all."""
        own = [n.service for n in self.nodes if n.service is not None and n.service.poll() is None]
        for process in own:
            process.send_signal(signal.SIGTERM)
        orphans = [pid for key, pid in self.orphan_pids.items() if key.endswith(":service")]
        terminate_all(orphans, timeout)
        for process in own:
            services.stop(process, timeout=timeout)
        for node in self.nodes:
            self.stop_corosync(node)
        terminate_all([pid for key, pid in self.orphan_pids.items() if not key.endswith(":service")], 20)
        for namespace in [n.namespace for n in self.nodes] + [self.bridge_ns]:
            terminate_all(netns.pids(namespace), 10)
        self.orphan_pids = {}
        self.down()
        netns.delete_link(self.host_port)


def run_python(namespace: str, script: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Python script of this repository inside a namespace (where that node's corosync IPC is)."""
    repo = Path(__file__).resolve().parent.parent.parent
    return subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, str(script), *args],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _terminate(pid: int, timeout: float = 20) -> None:
    """SIGTERM a process we are not the parent of, then SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


HOST_ADDRESS = f"{SUBNET}.254"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def terminate_all(pids: list[int], timeout: float = 20) -> None:
    """SIGTERM every process in ``pids`` at once, then SIGKILL those still running after ``timeout``."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> bool:
    """Send ``signum`` to ``pid``; False if there is no such process."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
