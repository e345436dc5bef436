"""``manage.py pvecm status|nodes|expected N``: live corosync membership and quorum, Proxmox's formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from cluster.corosync import qdevice
from cluster.membership import lifecycle
from replicator.corosync import CorosyncError

SPLIT_BRAIN_WARNING = (
    "WARNING: lowering the expected votes can make more than one partition quorate (split brain). "
    "Use it only when the other nodes are known to be down."
)


class Command(BaseCommand):
    # No system checks: joins run this command over SSH on the cluster node, and checks add a second.
    requires_system_checks: list[str] = []
    help = "Cluster membership and quorum (pvecm status, pvecm nodes, pvecm expected N)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("status", help="cluster, quorum and membership information")
        sub.add_parser("nodes", help="the current members")
        expected = sub.add_parser("expected", help="set the expected votes (allows operation without quorum)")
        expected.add_argument("votes", type=int)
        lifecycle.add_parsers(sub)
        qdevice.add_parsers(sub)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verb"] in lifecycle.VERBS:
            lifecycle.handle(options["verb"], options, self.stdout)
            return
        if options["verb"] == "qdevice":
            qdevice.handle(options, self.stdout)
            return
        conf = Path(settings.PVE_ETC_DIR) / "corosync.conf"
        if not conf.exists():
            raise CommandError(f"Corosync config '{conf}' does not exist - is this node part of a cluster?")
        from cluster.corosync import status as corosync_status

        try:
            if options["verb"] == "expected":
                from replicator.corosync.quorum import Votequorum

                if options["votes"] < 1:
                    raise CommandError("expected votes must be at least 1")
                self.stderr.write(SPLIT_BRAIN_WARNING)
                quorum = Votequorum()
                try:
                    quorum.set_expected(options["votes"])
                finally:
                    quorum.close()
                return
            status = corosync_status.read_status()
        except CorosyncError as exc:
            if options["verb"] == "status":
                self._status_without_corosync(str(exc))
            raise CommandError(f"Cannot initialize CMAP service: {exc}") from None
        formatter = corosync_status.format_status if options["verb"] == "status" else corosync_status.format_nodes
        self.stdout.write(formatter(status), ending="")
        if options["verb"] == "status":
            self._pending_joins()
            self._replication_warnings()

    def _pending_joins(self) -> None:
        """Nodes added by addnode that have not joined yet: listed, their votes not counted until they have."""
        from cluster.models import Node

        try:
            pending = list(Node.objects.using("cluster").filter(joining=True).order_by("name"))
        except DatabaseError:  # no database here (a bare corosync node): nobody is joining through us
            return
        if not pending:
            return
        lines = ["", "Pending joins (added, not joined yet: their votes count once they have)", "-" * 72]
        for node in pending:
            lines.append(f"{node.name} (nodeid {node.nodeid}, {node.address}, {node.votes} vote(s) once joined)")
        self.stdout.write("\n".join(lines))

    def _status_without_corosync(self, error: str) -> None:
        """What this node knows without corosync: its cluster, and why it is read-only (what is missing)."""
        from cluster.corosync import conf as corosync_conf
        from replicator import client, membership
        from replicator.exceptions import ReplicationError

        try:
            config, _nodes = corosync_conf.load()
        except DatabaseError:  # no database here (yet): what the tree's corosync.conf says
            config = None
        try:
            reasons = list(client.status().get("not_ready") or [])
        except ReplicationError as exc:
            reasons = [*membership.cluster_file_problems(), f"the replicator is not reachable ({exc})"]
        if not any("corosync" in reason for reason in reasons):
            reasons.append(f"corosync did not answer ({error})")
        lines = [
            "Cluster information",
            "-------------------",
            f"{'Name:':<17} {config.cluster_name if config else 'UNKOWN?'}",
            f"{'Config Version:':<17} {config.config_version if config else -1}",
            "",
            "Quorum information",
            "------------------",
            f"{'Quorate:':<17} No",
            "",
            "This node is read-only (cluster not ready - no quorum?); what is missing:",
            *(f"  - {reason}" for reason in reasons),
        ]
        self.stdout.write("\n".join(lines))
        self._pending_joins()

    def _replication_warnings(self) -> None:
        """What the replicator knows and corosync does not: a diverged history, unequal checksums, skewed clocks."""
        from cluster.status import clock
        from replicator import client
        from replicator.exceptions import ReplicationError

        try:
            state = client.status()
        except ReplicationError as exc:
            self.stdout.write(f"\nWARNING: replicator not reachable: {exc}")
            return
        divergence = state.get("divergence")
        if divergence:
            why = divergence.get("message") or f"history diverged from {divergence['winner']}'s (forced quorum?)"
            self.stdout.write(
                f"\nWARNING: this node's {why}; "
                f"its state at version {divergence['lost_version']} is kept in {divergence['file']}"
            )
        verification = state.get("verification") or {}
        if verification and not verification.get("agree", True):
            self.stdout.write(f"\nWARNING: state checksums differ between members at version {verification['version']}")
        if not state.get("synced", True):
            self.stdout.write("\nWARNING: this node is synchronising its state; writes wait")
        for reason in state.get("not_ready") or []:
            self.stdout.write(f"\nWARNING: configuration is read-only: {reason}")
        for warning in clock.live_warnings():
            self.stdout.write(f"\n{warning}")
