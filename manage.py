#!/usr/bin/env python3
"""Django's command-line entry point: runnode, replicator, qm, migrate and friends."""

import os
import sys


def main() -> None:
    from replicator.private import restrict_umask

    restrict_umask()  # databases, logs, sockets and keys of the node are created for its owner only
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
