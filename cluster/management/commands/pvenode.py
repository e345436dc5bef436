"""``manage.py pvenode identity-backup FILE`` / ``identity-restore FILE``: re-install a node as itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cluster.identity.db import IdentityError


class Command(BaseCommand):
    help = (
        "Node identity (Proxmox's node re-install procedure): identity-backup FILE saves the cluster database, "
        "corosync authkey and corosync.conf, SSH keys, sshd host keys and secret key; identity-restore FILE puts "
        "them back on the re-installed node, which then rejoins as itself."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        backup = sub.add_parser("identity-backup", help="write this node's identity archive (tar.gz, mode 0600)")
        backup.add_argument("file", type=Path)
        backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
        restore = sub.add_parser("identity-restore", help="restore this node's identity from an archive")
        restore.add_argument("file", type=Path)
        restore.add_argument(
            "--allow-running",
            action="store_true",
            help="restore although this node's replicator answers (it must be restarted right after)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from cluster import services
        from cluster.identity import backup as identity_backup

        try:
            if options["verb"] == "identity-backup":
                lines = identity_backup.create_backup(options["file"], replace=options["force"])
            else:
                lines = services.restore_node_identity(options["file"], allow_running=options["allow_running"])
        except IdentityError as exc:
            raise CommandError(str(exc)) from None
        for line in lines:
            self.stdout.write(line)
