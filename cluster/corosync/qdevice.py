"""``pvecm qdevice setup|remove``: a third vote from a corosync-qnetd arbiter (PVE-INTERNALS §4.8).

A two-node cluster needs both votes for quorum; with a QDevice each node runs corosync-qdevice,
which asks corosync-qnetd on a third host for one more vote, so the node that still reaches the
arbiter stays quorate when the other is down. Setup follows Proxmox's ``pvecm``: the qnetd CA
certificate goes to every node's NSS database, one node's certificate request is signed by the
qnetd CA, the signed key pair (PKCS#12) goes to every other node; then the ``quorum.device``
section is written to the replicated corosync config (config_version bumped), every node's
corosync runs the new version, corosync-qdevice starts everywhere and corosync reloads.

Commands "on a host" go through a ``Runner``: SSH in production (``cluster.keys.ssh``), ``ip netns
exec`` in the lab (``NamespaceRunner``, registered by the lab app when ``PVE_LAB_HOSTS`` is set).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction

from cluster.corosync import conf as corosync_conf
from cluster.models import ClusterLogEntry, CorosyncConfig, Node

QDEVICE_STATE_DIR = "/etc/corosync/qdevice"
NODE_BASE_DIR = f"{QDEVICE_STATE_DIR}/net"
NODE_DB = f"{NODE_BASE_DIR}/nssdb"
QNETD_DB = "/etc/corosync/qnetd/nssdb"
CA_FILE = "qnetd-cacert.crt"
CRQ_FILE = "qdevice-net-node.crq"
P12_FILE = "qdevice-net-node.p12"
QDEVICE_CERTUTIL = "corosync-qdevice-net-certutil"
QNETD_CERTUTIL = "corosync-qnetd-certutil"
WAIT_TIMEOUT = 60.0

Output = Callable[[str], None]


class QdeviceError(Exception):
    """A refused or failed qdevice setup/remove; the message is what ``pvecm`` prints."""


class Runner(Protocol):
    """Runs a command on a cluster node or the qnetd host, and moves files there (argv lists, never shell text)."""

    def run(
        self, host: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]: ...

    def put(self, host: str, path: str, data: bytes, mode: int = 0o600) -> None: ...

    def get(self, host: str, path: str) -> bytes: ...

    def start_qdevice(self, host: str) -> None: ...

    def stop_qdevice(self, host: str) -> None: ...


class CommandRunner:
    """Files and the corosync-qdevice service over ``run`` alone (base64, systemctl): a transport implements ``run``.

    An SSH transport quotes ``argv`` for the remote shell (``shlex.join``); a namespace
    transport passes it as it is.
    """

    def run(
        self, host: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        raise NotImplementedError

    def put(self, host: str, path: str, data: bytes, mode: int = 0o600) -> None:
        """Base64 over stdin: the certificate bundles are binary, a transport may only carry text."""
        script = 'umask 077 && mkdir -p "$(dirname "$1")" && base64 -d > "$1" && chmod "$2" "$1"'
        check_run(self, host, ["sh", "-c", script, "sh", path, f"{mode:o}"], input=base64.b64encode(data))

    def get(self, host: str, path: str) -> bytes:
        return base64.b64decode(check_run(self, host, ["base64", "-w0", "--", path]))

    def start_qdevice(self, host: str) -> None:
        check_run(self, host, ["systemctl", "enable", "--now", "corosync-qdevice"])

    def stop_qdevice(self, host: str) -> None:
        check_run(self, host, ["systemctl", "disable", "--now", "corosync-qdevice"])


def check_run(
    runner: Runner, host: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120
) -> bytes:
    """``runner.run`` that raises ``QdeviceError`` with the command's output when it fails; returns stdout."""
    result = runner.run(host, argv, input=input, timeout=timeout)
    if result.returncode != 0:
        output = (result.stderr or b"").decode(errors="replace") + (result.stdout or b"").decode(errors="replace")
        raise QdeviceError(f"{host}: '{' '.join(argv)}' failed ({result.returncode}): {output.strip()}")
    return result.stdout or b""


class SshRunner(CommandRunner):
    """Node-to-node SSH (``cluster.keys.ssh``) as root with this node's key; one connection per host, kept open.

    Cluster members are verified against the cluster's known hosts; the qnetd host is not a
    member, so its host key is confirmed by the operator on the terminal, as ssh would ask.
    """

    def __init__(self) -> None:
        self.connections: dict[str, Any] = {}

    def _connection(self, host: str) -> Any:
        from cluster.keys import ssh, ssh_keys

        if host not in self.connections:
            self.connections[host] = ssh.connect(
                host,
                port=settings.PVE_SSH_PORT,
                key_file=ssh_keys.root_key_path(),
                known_hosts=ssh_keys.known_hosts_path(),
                confirm=ssh.ask_on_terminal,
            )
        return self.connections[host]

    def run(
        self, host: str, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        from cluster.keys.ssh import SSHError

        try:
            result = self._connection(host).run(
                list(argv), input=None if input is None else input.decode(), timeout=timeout
            )
        except SSHError as exc:
            raise QdeviceError(str(exc)) from None
        return subprocess.CompletedProcess(
            list(argv), result.returncode, result.stdout.encode(), result.stderr.encode()
        )

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        self.connections.clear()


RunnerFactory = Callable[[], Runner]
_runner_factory: RunnerFactory | None = None


def set_runner_factory(factory: RunnerFactory | None) -> None:
    """Run commands "on a host" through ``factory()`` instead of SSH (the lab app registers its namespace runner)."""
    global _runner_factory
    _runner_factory = factory


def default_runner() -> Runner:
    """The registered runner (the lab's when ``PVE_LAB_HOSTS`` names a hosts file), else node-to-node SSH."""
    if _runner_factory is not None:
        return _runner_factory()
    return SshRunner()


# --- The corosync.conf section ----------------------------------------------------------------


def device_section(address: str, algorithm: str) -> dict[str, Any]:
    """Proxmox's ``quorum.device``: ffsplit carries exactly one vote, lms the corosync default."""
    section: dict[str, Any] = {"model": "net", "net": {"algorithm": algorithm, "host": address, "tls": "on"}}
    if algorithm == "ffsplit":
        section["votes"] = 1
    return section


def check_address(address: str) -> str:
    """The qnetd address is an IP address (Proxmox's ``format => 'ip'``), returned normalised."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise QdeviceError(f"invalid qnetd address {address!r}: an IP address is expected") from None


# --- Cluster state -----------------------------------------------------------------------------


def _load_cluster() -> tuple[CorosyncConfig, list[Node]]:
    config, nodes = corosync_conf.load()
    if config is None:
        raise QdeviceError("Node not in a cluster. Aborting.")
    return config, nodes


def _require_online(nodes: list[Node]) -> None:
    from cluster.corosync.status import online_nodeids

    online = online_nodeids()
    for node in nodes:
        if node.nodeid not in online:
            raise QdeviceError(f"All nodes must be online! Node {node.name} is offline, aborting.")


def node_addresses(nodes: list[Node], network: str | None = None) -> dict[str, str]:
    """The address each node is reached on: its link 0, or with ``network`` its link address in that CIDR."""
    cidr = None
    if network is not None:
        try:
            cidr = ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise QdeviceError(f"invalid network {network!r}: a CIDR is expected") from None
    addresses = {}
    for node in nodes:
        links = corosync_conf.node_links(node)
        if cidr is None:
            chosen = links.get(0) or node.address
        else:
            chosen = next((a for a in links.values() if _in_network(a, cidr)), "")
        if not chosen:
            where = f" in {network}" if network else ""
            raise QdeviceError(f"cannot get the cluster IP for node '{node.name}'{where}.")
        addresses[node.name] = chosen
    return addresses


def _in_network(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False


def _wait_config_version(runner: Runner, hosts: dict[str, str], version: int, out: Output) -> None:
    """Until every node's running corosync has loaded ``version`` (its replicator copies and reloads)."""
    pending = dict(hosts)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while pending:
        for name, host in list(pending.items()):
            result = runner.run(host, ["corosync-cmapctl", "-g", "totem.config_version"], timeout=10)
            words = (result.stdout or b"").decode(errors="replace").split()
            if result.returncode == 0 and words and words[-1].isdigit() and int(words[-1]) >= version:
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise QdeviceError(f"corosync on {', '.join(sorted(pending))} did not load config version {version}")
        if pending:
            time.sleep(0.2)
    out(f"corosync runs config version {version} on every node")


# --- Setup ------------------------------------------------------------------------------------


def _exchange_certificates(
    runner: Runner, qnetd: str, cluster_name: str, hosts: dict[str, str], master: str, out: Output
) -> None:
    """Proxmox's sequence: qnetd CA -> every node; master's request signed by qnetd; its PKCS#12 -> the others."""
    run = functools.partial(check_run, runner)
    out("INFO: initializing qnetd server")
    if runner.run(qnetd, ["test", "-e", f"{QNETD_DB}/{CA_FILE}"]).returncode != 0:
        run(qnetd, [QNETD_CERTUTIL, "-i"])
    ca = runner.get(qnetd, f"{QNETD_DB}/{CA_FILE}")

    out("INFO: copying CA cert and initializing on all nodes")
    for name, host in hosts.items():
        run(host, ["rm", "-rf", "--", NODE_BASE_DIR])  # a fresh database: -i refuses an existing one
        runner.put(host, f"{NODE_BASE_DIR}/{CA_FILE}", ca, 0o644)
        _log_output(out, name, run(host, [QDEVICE_CERTUTIL, "-i", "-c", f"{NODE_BASE_DIR}/{CA_FILE}"]))

    master_host = hosts[master]
    out("INFO: generating cert request")
    run(master_host, [QDEVICE_CERTUTIL, "-r", "-n", cluster_name])
    request = runner.get(master_host, f"{NODE_DB}/{CRQ_FILE}")

    out("INFO: copying exported cert request to qnetd server")
    workdir = run(qnetd, ["mktemp", "-d"]).decode().strip()
    try:
        runner.put(qnetd, f"{workdir}/{CRQ_FILE}", request)
        out("INFO: sign and export cluster cert")
        run(qnetd, [QNETD_CERTUTIL, "-s", "-c", f"{workdir}/{CRQ_FILE}", "-n", cluster_name])
    finally:
        runner.run(qnetd, ["rm", "-rf", "--", workdir])
    out("INFO: copy exported CRT")
    certificate = runner.get(qnetd, f"{QNETD_DB}/cluster-{cluster_name}.crt")
    runner.put(master_host, f"{NODE_DB}/cluster-{cluster_name}.crt", certificate)

    out("INFO: import certificate")
    run(master_host, [QDEVICE_CERTUTIL, "-M", "-c", f"{NODE_DB}/cluster-{cluster_name}.crt"])
    bundle = runner.get(master_host, f"{NODE_DB}/{P12_FILE}")

    out("INFO: copy and import pk12 cert to all nodes")
    for name, host in hosts.items():
        if name != master:
            runner.put(host, f"{NODE_DB}/{P12_FILE}", bundle)
            _log_output(out, name, run(host, [QDEVICE_CERTUTIL, "-m", "-c", f"{NODE_DB}/{P12_FILE}"]))


def setup(
    address: str,
    *,
    force: bool = False,
    network: str | None = None,
    runner: Runner | None = None,
    out: Output = print,
) -> int:
    """``pvecm qdevice setup``: refusals first (nothing changed), then certificates, config, daemons; returns config_version."""
    address = check_address(address)
    config, nodes = _load_cluster()
    _require_online(nodes)
    if config.quorum_device and not force:
        raise QdeviceError("QDevice already configured!")
    algorithm = "ffsplit"
    if len(nodes) % 2:
        if not force:
            raise QdeviceError("Clusters with an odd node count are not officially supported!")
        out("WARN: odd node count: using the lms (last man standing) algorithm")
        algorithm = "lms"
    hosts = node_addresses(nodes, network)
    config.quorum_device = device_section(address, algorithm)
    corosync_conf.validate(config, nodes)
    master = settings.PVE_NODE_NAME if settings.PVE_NODE_NAME in hosts else sorted(hosts)[0]
    with _runner(runner) as remote:
        if force:  # a running qdevice of an earlier setup holds the NSS database about to be replaced
            for host in hosts.values():
                remote.stop_qdevice(host)
        _exchange_certificates(remote, address, config.cluster_name, hosts, master, out)

        out("INFO: add QDevice to cluster configuration")
        with transaction.atomic(using="cluster"):
            ClusterLogEntry.write(f"adding QDevice {address} ({algorithm})", user="root@pam", tag="pvecm")
            version = corosync_conf.update_corosync(config)
        _wait_config_version(remote, hosts, version, out)
        for name, host in hosts.items():
            out(f"INFO: start and enable corosync qdevice daemon on node '{name}'...")
            remote.start_qdevice(host)
    corosync_conf.reload_corosync()
    return version


# --- Remove -----------------------------------------------------------------------------------


def remove(*, runner: Runner | None = None, out: Output = print) -> int:
    """``pvecm qdevice remove``: drop the section, then stop qdevice and delete its state on every node."""
    config, nodes = _load_cluster()
    _require_online(nodes)
    if not config.quorum_device:
        raise QdeviceError("No QDevice configured!")
    hosts = node_addresses(nodes)
    with _runner(runner) as remote:
        config.quorum_device = {}
        with transaction.atomic(using="cluster"):
            ClusterLogEntry.write("removing QDevice", user="root@pam", tag="pvecm")
            version = corosync_conf.update_corosync(config)
        _wait_config_version(remote, hosts, version, out)
        for host in hosts.values():
            remote.stop_qdevice(host)
            check_run(remote, host, ["rm", "-rf", "--", QDEVICE_STATE_DIR])
    corosync_conf.reload_corosync()
    out("Removed Qdevice.")
    return version


# --- Helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _runner(given: Runner | None) -> Iterator[Runner]:
    """The caller's runner, or the default one, closed (its SSH connections) when done."""
    runner = given if given is not None else default_runner()
    try:
        yield runner
    finally:
        close = getattr(runner, "close", None)
        if given is None and close is not None:
            close()


def _log_output(out: Output, node: str, output: bytes) -> None:
    for line in output.decode(errors="replace").splitlines():
        if line.strip():
            out(f"node '{node}': {line}")


# --- pvecm qdevice ----------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """``pvecm qdevice setup ADDRESS [--force] [--network CIDR]`` and ``pvecm qdevice remove``."""
    qdevice = sub.add_parser("qdevice", help="QDevice (corosync-qnetd arbiter) management")
    verbs = qdevice.add_subparsers(dest="qdevice_verb", required=True)
    setup_parser = verbs.add_parser("setup", help="set up the use of a QDevice")
    setup_parser.add_argument("address", help="IP address of the external corosync-qnetd host")
    setup_parser.add_argument("--force", action="store_true", help="replace a QDevice; allow an odd node count (lms)")
    setup_parser.add_argument("--network", help="CIDR: reach the nodes on their link address in this network")
    verbs.add_parser("remove", help="remove the configured QDevice")


def handle(options: dict[str, Any], stdout: Any) -> None:
    """Run a ``pvecm qdevice`` verb; a refusal or failure becomes the command's error."""
    from django.core.management.base import CommandError

    from replicator.corosync.errors import CorosyncError
    from replicator.exceptions import ReplicationError

    def out(line: str) -> None:
        stdout.write(line)

    try:
        if options["qdevice_verb"] == "setup":
            setup(options["address"], force=options["force"], network=options["network"], out=out)
        else:
            remove(out=out)
    except (QdeviceError, ValueError, ReplicationError, CorosyncError) as exc:
        raise CommandError(str(exc)) from None
