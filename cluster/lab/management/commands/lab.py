"""``manage.py lab up|status|down|partition|heal|exec``: a real cluster in network namespaces.

``lab up`` builds a bridge namespace and one namespace per node (10.213.0.i/24), gives the host
10.213.0.254 on the bridge, starts corosync and a whole node runner (redis, replicator, Celery,
HTTPS web) per node, and prints each node's portal URL and the ``root@pam`` password. State
(with that password: mode 0600) lives in ``<PVE_DATA_DIR>/lab/state.json`` so later commands
find the lab; ``lab down`` stops every process the lab made and removes every namespace and link.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.lab import netns, services, standalone
from cluster.lab.cluster import HOST_ADDRESS, SUBNET, LabCluster, LabNode
from replicator import client
from replicator.files import atomic_write


def _state_path() -> Path:
    return Path(settings.PVE_DATA_DIR) / "lab" / "state.json"


def _load() -> LabCluster:
    try:
        state = json.loads(_state_path().read_text())
    except FileNotFoundError:
        raise CommandError("no lab is up (run: manage.py lab up --nodes 3)") from None
    lab = LabCluster.from_state(state)
    if state.get("standalone"):
        lab.standalone = True
        for node in lab.nodes:
            node.env.update(standalone.standalone_environment(node))
    return lab


def _save(lab: LabCluster) -> None:
    """The state file holds the root password: created 0600, never readable by others."""
    path = _state_path()
    atomic_write(path, json.dumps({**lab.state(), "standalone": lab.standalone}).encode(), mode=0o600)


def _password() -> str:
    """A random root password that is easy to paste (letters and digits only)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _with_web(lab: LabCluster) -> LabCluster:
    """Each node's web server listens on the node's own address."""
    for node in lab.nodes:
        node.env.update(services.web_environment(node.address))
    return lab


class Command(BaseCommand):
    help = "Build and drive a lab cluster of whole nodes (corosync and node runner) in network namespaces."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        up = sub.add_parser("up", help="create the namespaces, start corosync and a node runner on every node")
        up.add_argument("--nodes", type=int, default=3)
        up.add_argument("--root-password", default=None, help="password of root@pam (default: generated)")
        up.add_argument(
            "--standalone",
            action="store_true",
            help="start unclustered nodes, each with its own sshd, to try pvecm create and pvecm add",
        )
        sub.add_parser("status", help="quorum and version of every node's replicator")
        sub.add_parser("down", help="stop everything and remove every namespace the lab made")
        partition = sub.add_parser("partition", help="cut one node's link")
        partition.add_argument("node")
        sub.add_parser("heal", help="restore every link")
        run = sub.add_parser("exec", help="run a command inside a node's namespace: lab exec node1 -- CMD")
        run.add_argument("node")
        run.add_argument("argv", nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options["verb"]
        if verb == "up":
            self._up(options["nodes"], options["root_password"] or _password(), options["standalone"])
            return
        lab = _with_web(_load())
        if verb == "down":
            self.stdout.write(f"stopping {len(lab.nodes)} nodes")
            lab.teardown()
            _state_path().unlink()
            self.stdout.write("lab removed")
        elif verb == "status":
            self._status(lab)
        elif verb == "partition":
            lab.partition(self._node(lab, options["node"]))
        elif verb == "heal":
            lab.heal()
        elif verb == "exec":
            node = self._node(lab, options["node"])
            argv = options["argv"][1:] if options["argv"][:1] == ["--"] else options["argv"]
            if not lab.standalone:
                etc = node.directory / "etc" / "pve"
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "corosync.conf").write_text((node.directory / "corosync.conf").read_text())
            env = {**services.without_host_settings(dict(os.environ)), **node.env}
            os.execvpe("ip", ["ip", "netns", "exec", node.namespace, *argv], env)

    def _up(self, size: int, password: str, alone: bool = False) -> None:
        if _state_path().exists():
            raise CommandError(f"a lab is already up ({_state_path()}); run: manage.py lab down")
        if not 1 <= size <= 16:
            raise CommandError("a lab has 1 to 16 nodes")
        taken = netns.links_with_address_in(f"{SUBNET}.0/24")
        if taken:
            raise CommandError(
                f"{SUBNET}.0/24 is already on this host's link {taken[0]} (another lab?): "
                f"run that lab's down, or remove a leftover with: ip link del {taken[0]}"
            )
        shutil.rmtree(_state_path().parent, ignore_errors=True)  # a fresh cluster, not an old lab's data
        # The nodes get their own settings; none of this shell's node (databases, redis) leaks in.
        for key in set(os.environ) - set(services.without_host_settings(dict(os.environ))):
            del os.environ[key]
        started = time.monotonic()
        lab = _with_web(LabCluster(Path(settings.PVE_DATA_DIR) / "lab", size, root_password=password))
        try:
            self._progress(started, f"network: {SUBNET}.0/24, host {HOST_ADDRESS} on {lab.host_port}")
            if alone:
                lab.standalone = True
                standalone.up_standalone(lab)
                lab.connect_host()
                self._progress(started, f"sshd ready on {size} standalone nodes; starting the node runners")
            else:
                lab.up()
                lab.connect_host()
                self._progress(started, f"corosync ready on {size} nodes; starting the node runners")
            lab.start_services("node", timeout=180)
            self._progress(started, "replicators quorate and in sync")
            for node in lab.nodes:
                url = services.portal_url(node.address)
                services.wait_web(url + "admin/login/", services.ca_path(node.directory), node.service)
                self._progress(started, f"{node.name}: portal answers at {url}")
            _save(lab)
        except BaseException:
            self.stderr.write("lab up failed; removing what it made")
            lab.teardown()
            raise
        for node in lab.nodes:
            self.stdout.write(
                f"{node.name}: address {node.address}, portal {services.portal_url(node.address)}, "
                f"namespace {node.namespace}"
            )
        self.stdout.write(f"login: root@pam, password {password}")
        self.stdout.write(f"cluster CA: {services.ca_path(lab.nodes[0].directory)}")
        if alone:
            from cluster.keys.certificates import certificate_fingerprint

            first = lab.nodes[0]
            cert = first.directory / "etc" / "pve" / "nodes" / first.name / "pve-ssl.pem"
            self.stdout.write(
                "try: manage.py lab exec node1 -- .venv/bin/python manage.py pvecm create lab\n"
                "     manage.py lab exec node2 -- .venv/bin/python manage.py pvecm add "
                f"{first.address} --use-api --fingerprint {certificate_fingerprint(cert.read_bytes())} --password-file -\n"
                "     (type the root@pam password above; or authorize node2's ssh/id_ed25519.pub in "
                "node1/sshd/authorized_keys and join over SSH)"
            )
            return
        self.stdout.write(
            "try: manage.py lab status; manage.py lab exec node1 -- .venv/bin/python manage.py pvecm status"
        )

    def _progress(self, started: float, message: str) -> None:
        self.stdout.write(f"[{time.monotonic() - started:5.1f}s] {message}")
        self.stdout.flush()

    def _status(self, lab: LabCluster) -> None:
        for node in lab.nodes:
            state = client.status_at(node.socket_path, timeout=5)
            if state is None:
                self.stdout.write(f"{node.name}: replicator not answering")
                continue
            self.stdout.write(
                f"{node.name}: quorate {'yes' if state.get('quorate') else 'no'}, version {state.get('version')}, "
                f"synced {'yes' if state.get('synced') else 'no'}, portal {services.portal_url(node.address)}"
            )

    @staticmethod
    def _node(lab: LabCluster, name: str) -> LabNode:
        try:
            return lab.node(name)
        except KeyError as exc:
            raise CommandError(str(exc)) from None
