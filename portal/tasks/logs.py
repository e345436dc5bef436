"""Task log files: ``<data>/tasks/<last hex digit of starttime>/<UPID>``, one line per entry.

A log ends with ``TASK OK`` / ``TASK WARNINGS: <n>`` / ``TASK ERROR: <message>`` once the task
finished (``state``); the API, ``follow`` and the index read it here.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from portal.tasks.upid import parse_upid


def log_path(upid: str) -> Path:
    """``<data>/tasks/<last hex digit of starttime>/<UPID>`` as Proxmox lays them out."""
    parsed = parse_upid(upid)
    return Path(settings.PVE_DATA_DIR) / "tasks" / f"{parsed.starttime & 0xF:X}" / upid


def read_lines(upid: str) -> list[str]:
    try:
        return log_path(upid).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def read_log(upid: str, start: int = 0, limit: int = 50) -> tuple[list[dict[str, object]], int]:
    """Lines ``[start, start+limit)`` as ``{n, t}`` (1-based) and the total line count."""
    lines = read_lines(upid)
    chosen = lines[start : start + limit] if limit > 0 else lines[start:]
    return [{"n": start + i + 1, "t": text} for i, text in enumerate(chosen)], len(lines)
