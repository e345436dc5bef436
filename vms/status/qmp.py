"""One QMP conversation per running VM per round: status, balloon and block statistics.

All VMs are asked at once in one event loop, each bounded by a short timeout, so a hung QEMU
costs its own answer (left out of this round) and never delays the others or the round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.qmp_client import ExecuteError

log = logging.getLogger(__name__)
TIMEOUT = 1.0


async def _ask(vmid: int, socket: Path) -> dict[str, Any] | None:
    client = QMPClient(f"pvestatd-{vmid}")
    try:
        await client.connect(str(socket))
        status: dict[str, Any] = await client.execute("query-status")  # type: ignore[assignment]
        answer: dict[str, Any] = {"qmpstatus": str(status.get("status", "unknown"))}
        try:
            balloon: dict[str, Any] = await client.execute("query-balloon")  # type: ignore[assignment]
            answer["balloon"] = int(balloon.get("actual", 0))
        except ExecuteError:  # no balloon device
            pass
        read = written = 0
        devices: list[dict[str, Any]] = await client.execute("query-blockstats")  # type: ignore[assignment]
        for device in devices:
            stats = device.get("stats", {})
            read += int(stats.get("rd_bytes", 0))
            written += int(stats.get("wr_bytes", 0))
        answer["diskread"], answer["diskwrite"] = read, written
        return answer
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 0.2)


async def _bounded(vmid: int, socket: Path, timeout: float) -> tuple[int, dict[str, Any] | None]:
    try:
        return vmid, await asyncio.wait_for(_ask(vmid, socket), timeout)
    except Exception as exc:
        log.debug("QMP of VM %s did not answer: %s", vmid, exc or type(exc).__name__)
        return vmid, None


async def _all(sockets: dict[int, Path], timeout: float) -> dict[int, dict[str, Any] | None]:
    answers = await asyncio.gather(*(_bounded(vmid, path, timeout) for vmid, path in sockets.items()))
    return dict(answers)


def query_all(sockets: dict[int, Path], timeout: float = TIMEOUT) -> dict[int, dict[str, Any] | None]:
    """``{vmid: {qmpstatus, balloon?, diskread, diskwrite}}``; None for a VM whose QMP did not answer."""
    if not sockets:
        return {}
    return asyncio.run(_all(sockets, timeout))
