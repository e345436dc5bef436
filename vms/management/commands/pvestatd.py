"""``manage.py pvestatd``: this node's status collector (Proxmox's pvestatd), run by ``runnode``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from vms.status import daemon


class Command(BaseCommand):
    help = "Collect this node's, its VMs' and storages' live status every PVE_STATUS_INTERVAL seconds."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds (tests)")

    def handle(self, *args: Any, **options: Any) -> None:
        daemon.run(rounds=options["rounds"])
