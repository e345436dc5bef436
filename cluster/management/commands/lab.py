"""``manage.py lab up|down|partition|heal|exec``: a real corosync cluster in network namespaces.

For now the lab runs corosync only (one per node); node runners join it with the corosync
transport. State lives in ``<PVE_DATA_DIR>/lab/state.json`` so later commands find the lab.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.lab.cluster import LabCluster


def _state_path() -> Path:
    return Path(settings.PVE_DATA_DIR) / "lab" / "state.json"


def _load() -> LabCluster:
    try:
        return LabCluster.from_state(json.loads(_state_path().read_text()))
    except FileNotFoundError:
        raise CommandError("no lab is up (run: manage.py lab up --nodes 3)") from None


class Command(BaseCommand):
    help = "Build and drive a lab cluster of real corosync nodes in network namespaces on this host."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        up = sub.add_parser("up", help="create the namespaces and start corosync on every node")
        up.add_argument("--nodes", type=int, default=3)
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
            if _state_path().exists():
                raise CommandError(f"a lab is already up ({_state_path()}); run: manage.py lab down")
            lab = LabCluster(Path(settings.PVE_DATA_DIR) / "lab", options["nodes"])
            try:
                lab.up()
            except Exception:
                lab.down()
                raise
            _state_path().write_text(json.dumps(lab.state()))
            for node in lab.nodes:
                self.stdout.write(f"{node.name}: namespace {node.namespace}, address {node.address}")
            self.stdout.write("try: manage.py lab exec node1 -- .venv/bin/python manage.py pvecm status")
            return
        lab = _load()
        if verb == "down":
            lab.down()
            _state_path().unlink()
            self.stdout.write("lab removed")
        elif verb == "partition":
            lab.partition(self._node(lab, options["node"]))
        elif verb == "heal":
            lab.heal()
        elif verb == "exec":
            node = self._node(lab, options["node"])
            argv = options["argv"][1:] if options["argv"][:1] == ["--"] else options["argv"]
            etc = node.directory / "etc" / "pve"
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "corosync.conf").write_text((node.directory / "corosync.conf").read_text())
            env = {**os.environ, "PVE_DATA_DIR": str(node.directory), "PVE_NODE_NAME": node.name}
            os.execvpe("ip", ["ip", "netns", "exec", node.namespace, *argv], env)

    @staticmethod
    def _node(lab: LabCluster, name: str) -> Any:
        try:
            return lab.node(name)
        except KeyError as exc:
            raise CommandError(str(exc)) from None
