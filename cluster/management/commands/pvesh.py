"""``manage.py pvesh get|create|set|delete|ls|usage PATH [-key value ...] [--output-format text|json|json-pretty]``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cluster import pvesh


class Command(BaseCommand):
    help = (
        "The API as root@pam on this node (Proxmox's pvesh): get, create (POST), set (PUT), delete, ls (a "
        "directory's entries), usage (the verbs a path answers to). Parameters as -key value; the payload "
        "is printed bare; an error is a stderr line 'NNN reason' and exit status 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("words", nargs=argparse.REMAINDER, help="VERB PATH [-key value ...]")

    def run_from_argv(self, argv: list[str]) -> None:
        # every argument is pvesh's own (-key value pairs would otherwise look like Django's options)
        self.execute(words=argv[2:], verbosity=1, settings=None, pythonpath=None, traceback=False,
                     no_color=False, force_color=False, skip_checks=True)  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("django.request").setLevel(logging.CRITICAL)  # the answer's own status line says it
        try:
            request = pvesh.parse(list(options["words"]))
            if request.verb == "usage":
                self.stdout.write("\n".join(pvesh.usage(request.path)))
                return
            answer = pvesh.call(pvesh.METHODS[request.verb], request.path, request.values)
        except pvesh.UsageError as exc:
            sys.stderr.write(f"400 {exc}\n")
            sys.exit(2)
        if answer.status != 200:
            sys.stderr.write(f"{answer.status} {answer.reason}\n")
            for key, message in sorted((answer.errors or {}).items()):
                sys.stderr.write(f"{key}: {message}\n")
            sys.exit(1)
        data = pvesh.children(answer.data) if request.verb == "ls" else answer.data
        text = pvesh.render(data, request.output_format)
        if text:
            self.stdout.write(text)
