"""QEMU's side of a live migration (qemu-server's ``phase2``): the memory stream sent over QMP, watched.

``migrate-set-capabilities`` (auto-converge) and ``migrate-set-parameters`` (``downtime-limit``
from ``migration_downtime`` seconds, ``max-bandwidth`` the lower of ``bwlimit`` KiB/s and
``migrate_speed`` MiB/s, 16 GiB/s when neither is set, as qemu-server), then ``migrate`` and
``query-migrate`` polled, with qemu-server's progress lines in the task log ("migration active,
transferred 1.1 GiB of 8.0 GiB VM-state, 109.4 MiB/s"; "average migration speed: ... - downtime
31 ms"). On any failure or timeout the migration is cancelled and the source guest continued
before the error is raised, so the caller's cleanup starts from a running source. The target's
half: ``incoming_args`` (paused after loading, so ownership moves before it runs) and the lines
its start prints (``migration listens on <uri>``), parsed by ``parse_listen_lines``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vms.qemu import qmp
from vms.qemu.blockjobs import render_bytes

Log = Callable[[str], None]
POLL = 0.25  # seconds between two looks at the migration
LOG_EVERY = 1.0  # seconds between two progress lines
DEFAULT_MAX_BANDWIDTH = 16 * 1024**3  # bytes/s: qemu-server's default (no limit in practice)
DEFAULT_DOWNTIME = 0.1  # seconds (``migration_downtime``'s default)
MIGRATE_TIMEOUT = 24 * 3600.0
LISTEN_RE = re.compile(r"^migration listens on (unix:\S+|tcp:\S+)$")
NBD_RE = re.compile(r"^storage migration listens on (nbd:\S+) volume:(\S+)$")
EXPORT_RE = re.compile(r"exportname=drive-([a-z]+\d+)$")


class MigrationError(RuntimeError):
    """A memory migration that failed, was cancelled or took too long; the source runs again when raised."""


def parameters(
    *, downtime: float | None = None, migrate_speed: int | None = None, bwlimit: int | None = None
) -> dict[str, int]:
    """``migrate-set-parameters`` arguments: ``downtime`` seconds, ``migrate_speed`` MiB/s, ``bwlimit`` KiB/s."""
    if downtime is not None and downtime < 0:  # 0 is allowed as in qemu-server: the 1 ms floor below
        raise ValueError("migration_downtime must be >= 0 seconds")
    limits = [value for value in (migrate_speed and migrate_speed * 1024**2, bwlimit and bwlimit * 1024) if value]
    return {
        "downtime-limit": max(1, int((downtime if downtime is not None else DEFAULT_DOWNTIME) * 1000)),
        "max-bandwidth": min(limits) if limits else DEFAULT_MAX_BANDWIDTH,
    }


CAPABILITIES = {"auto-converge": True}  # the guest is slowed when its RAM is dirtied faster than sent


def progress_line(info: Mapping[str, Any]) -> str:
    """qemu-server's line for one ``query-migrate`` answer of an active migration."""
    ram = info.get("ram", {})
    transferred, total = int(ram.get("transferred", 0)), int(ram.get("total", 0))
    speed = float(ram.get("mbps", 0.0)) * 1000**2 / 8  # QEMU reports megabits per second
    line = f"migration {info.get('status')}, transferred {render_bytes(transferred)} of {render_bytes(total)} VM-state, {render_bytes(speed)}/s"
    remaining = int(ram.get("remaining", 0))
    if remaining and info.get("status") == "active":
        line += f", {render_bytes(remaining)} remaining"
    return line


def summary_lines(info: Mapping[str, Any]) -> list[str]:
    """The lines qemu-server logs once a migration completed: average speed and downtime, then the status."""
    ram = info.get("ram", {})
    seconds = int(info.get("total-time", 0)) / 1000
    average = int(ram.get("transferred", 0)) / seconds if seconds else 0.0
    return [
        f"average migration speed: {render_bytes(average)}/s - downtime {int(info.get('downtime', 0))} ms",
        f"migration status: {info.get('status')}",
    ]


def prepare(vmid: int, params: Mapping[str, int]) -> None:
    """Capabilities and parameters set on the source before ``migrate``."""
    qmp.command(
        vmid,
        "migrate-set-capabilities",
        {"capabilities": [{"capability": name, "state": state} for name, state in CAPABILITIES.items()]},
    )
    qmp.command(vmid, "migrate-set-parameters", dict(params))


def cancel(vmid: int, *, log: Log, timeout: float = 30.0) -> None:
    """``migrate_cancel``, wait until QEMU says it ended, and continue the guest if the migration paused it."""
    with contextlib.suppress(qmp.QMPCommandError):
        qmp.command(vmid, "migrate_cancel")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = qmp.command(vmid, "query-migrate").get("status")
        except qmp.QMPCommandError:
            return  # QEMU is gone: nothing left to continue
        if status not in ("active", "setup", "cancelling", "pre-switchover", "device", "wait-unplug"):
            break
        time.sleep(POLL)
    with contextlib.suppress(qmp.QMPCommandError):
        if qmp.status(vmid) in ("paused", "postmigrate", "finish-migrate"):
            qmp.command(vmid, "cont")
            log("source VM continued")


def migrate(
    vmid: int, uri: str, params: Mapping[str, int], *, log: Log, timeout: float = MIGRATE_TIMEOUT
) -> dict[str, Any]:
    """Send VM ``vmid``'s state to ``uri`` (a listening target QEMU); the last ``query-migrate`` answer.

    The source is left paused (``postmigrate``) on success; on any failure it runs again.
    """
    started = time.monotonic()
    try:
        prepare(vmid, params)
        log(f"start migrate command to {uri}")
        qmp.command(vmid, "migrate", {"uri": uri})
        return _watch(vmid, started, log, timeout)
    except BaseException:
        cancel(vmid, log=log)
        raise


def _watch(vmid: int, started: float, log: Log, timeout: float) -> dict[str, Any]:
    last_logged = 0.0
    while True:
        info = dict(qmp.command(vmid, "query-migrate"))
        status = info.get("status")
        now = time.monotonic()
        if status == "completed":
            for line in summary_lines(info):
                log(line)
            return info
        if status in ("failed", "cancelled"):
            raise MigrationError(f"aborting phase 2 - migration {status}: {info.get('error-desc', status)}")
        if status == "active" and now - last_logged >= LOG_EVERY:
            log(progress_line(info))
            last_logged = now
        if now - started > timeout:
            raise MigrationError(f"aborting phase 2 - migration did not finish within {int(timeout)} s")
        time.sleep(POLL)


def incoming_args(uri: str) -> list[str]:
    """A target QEMU's arguments: listen on ``uri`` and stay paused once loaded (``-S``) until resumed."""
    return ["-S", "-incoming", uri]


@dataclass
class Listening:
    """What a target's incoming start printed: the memory URI and, per drive, its NBD URI and new volume."""

    uri: str = ""
    disks: dict[str, tuple[str, str]] = field(default_factory=dict)  # drive key -> (nbd uri, target volid)


def parse_listen_lines(output: str) -> Listening:
    """Read ``migration listens on ...`` and ``storage migration listens on ... volume:...`` lines."""
    found = Listening()
    for line in output.splitlines():
        line = line.strip()
        if match := LISTEN_RE.match(line):
            found.uri = match.group(1)
        elif match := NBD_RE.match(line):
            drive = EXPORT_RE.search(match.group(1))
            if drive is None:
                raise MigrationError(f"unable to read the drive of '{line}'")
            found.disks[drive.group(1)] = (match.group(1), match.group(2))
    if not found.uri:
        raise MigrationError("unable to detect the remote migration address")
    return found
