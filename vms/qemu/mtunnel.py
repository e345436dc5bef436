"""``qm mtunnel``: the target node's command channel of a live migration (qemu-server's mtunnel).

qemu-server's source starts it over SSH for the commands of a migration; this project's
migrations ask the target's API instead (:mod:`vms.services.migration.target`), so this verb
serves callers that speak qemu-server's protocol over node SSH. It prints ``tunnel online``, then answers each line
on its standard input with ``OK`` or ``ERR: <reason>``: ``resume <vmid>`` (the migrated guest
continued once this node owns it, :func:`vms.qemu.incoming.resume_incoming`), ``quit``. It ends
on ``quit`` or at the end of its input (the source's SSH session closed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

ONLINE = "tunnel online"
RESUME_RE = re.compile(r"resume ([1-9][0-9]{2,8})")


def serve(lines: Iterable[str], answer: Callable[[str], None]) -> None:
    """Answer the commands in ``lines`` through ``answer`` (one line each) until ``quit`` or their end."""
    from vms.qemu.incoming import resume_incoming

    answer(ONLINE)
    for raw in lines:
        line = raw.strip()
        if line == "quit":
            answer("OK")
            return
        resume = RESUME_RE.fullmatch(line)
        if resume is None:
            answer(f"ERR: unknown command '{line[:64]}'")
            continue
        try:
            resume_incoming(int(resume.group(1)), log=lambda _line: None)
        except Exception as exc:
            answer(f"ERR: resume failed - {exc}")
        else:
            answer("OK")
