"""``manage.py vzdump <vmid>... [--all --exclude --pool --storage --mode --compress ...]``: Proxmox's vzdump CLI.

Runs as root@pam in this process as a ``vzdump`` task (a UPID and its log, shown as it is
written); the work is ``vms.services.backup.vzdump``'s, as for the API and scheduled jobs.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz.models import SUPERUSER
from portal.tasks.index import own_process_task
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.services import backup

OPTIONS = (
    "all", "exclude", "pool", "storage", "mode", "compress", "bwlimit", "ionice", "remove", "prune-backups",
    "protected", "notes-template", "stopwait",
)  # fmt: skip


class Command(BaseCommand):
    help = "Back up VMs of this node into archives on a backup storage (vzdump)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("vmid", nargs="*", help="the VMs to back up (or --all, --pool)")
        for name in OPTIONS:
            parser.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        options: dict[str, Any] = {
            k: opts[k.replace("-", "_")] for k in OPTIONS if opts[k.replace("-", "_")] is not None
        }
        if opts["vmid"]:
            options["vmid"] = ",".join(opts["vmid"])
        try:
            plan = backup.check_vzdump(options)
        except ConfigError as exc:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in exc.errors.items())) from None
        except VMError as exc:
            raise CommandError(str(exc)) from None
        try:
            with own_process_task("vzdump", str(plan.vmids[0]) if len(plan.vmids) == 1 else "", SUPERUSER) as task:

                def log(line: str) -> None:
                    task.log(line)
                    self.stdout.write(line)
                    self.stdout.flush()

                def warn(line: str) -> None:
                    task.warn(line)
                    self.stdout.write(f"WARN: {line}")

                backup.vzdump(options, owner=task.upid, log=log, warn=warn)
        except Exception as exc:
            raise CommandError(str(exc)) from None
