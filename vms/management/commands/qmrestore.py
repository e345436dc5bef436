"""``manage.py qmrestore <archive> <vmid> [--storage --unique 1 --force 1 --pool --bwlimit]``: Proxmox's qmrestore.

``archive`` is a backup volume id (``local:backup/vzdump-qemu-100-....tar.zst``) or a path to an
archive file. Runs as root@pam in this process as a ``qmrestore`` task, its log shown as it is
written; the work is ``vms.services.backup.restore``'s, as for the API.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz.models import SUPERUSER, User
from portal.tasks.index import own_process_task
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.services.backup import restore


def _flag(value: str | None, name: str) -> bool:
    if value not in (None, "0", "1"):
        raise CommandError(f"--{name} takes 0 or 1")
    return value == "1"


class Command(BaseCommand):
    help = "Restore a VM from a vzdump archive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("archive")
        parser.add_argument("vmid")
        for name in ("storage", "pool", "unique", "force", "bwlimit"):
            parser.add_argument(f"--{name}", default=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        root = User.objects.filter(userid=SUPERUSER).first()
        if root is None:
            raise CommandError(f"{SUPERUSER} does not exist (node not bootstrapped?)")
        bwlimit = opts["bwlimit"]
        if bwlimit is not None and not str(bwlimit).isdigit():
            raise CommandError("--bwlimit takes KiB/s")
        try:
            plan = restore.check_restore(
                opts["archive"],
                opts["vmid"],
                actor=root,
                storage=opts["storage"],
                pool=opts["pool"],
                unique=_flag(opts["unique"], "unique"),
                force=_flag(opts["force"], "force"),
                bwlimit=int(bwlimit) if bwlimit else None,
            )
        except ConfigError as exc:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in exc.errors.items())) from None
        except VMError as exc:
            raise CommandError(str(exc)) from None
        try:
            with own_process_task("qmrestore", str(plan.vmid), SUPERUSER) as task:

                def log(line: str) -> None:
                    task.log(line)
                    self.stdout.write(line)
                    self.stdout.flush()

                restore.restore(plan, actor=root, owner=task.upid, log=log)
        except Exception as exc:
            raise CommandError(str(exc)) from None
