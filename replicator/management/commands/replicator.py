"""``manage.py replicator``: the process that owns every write to the cluster database."""

import sys
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the replicator: apply change sets, keep the version and hash chain, render /etc/pve."

    def handle(self, *args: Any, **options: Any) -> None:
        from replicator.daemon import Replicator
        from replicator.private import secure_from_settings

        secure_from_settings()  # an existing data directory made readable by an older release
        replicator = Replicator()
        replicator.serve_forever()
        if replicator.exit_code:
            sys.exit(replicator.exit_code)
