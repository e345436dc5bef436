"""A small synchronous QMP client over ``qemu.qmp`` (QEMU's own library): one connection per call.

Every step has a timeout, and failures carry qemu-server's wording ("VM 100 qmp command
'query-status' failed - got timeout"), so a task log reads as Proxmox's would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

from vms.runtime_paths import vm_file

DEFAULT_TIMEOUT = 10.0  # seconds, per connect and per command

# qemu.qmp logs every protocol hiccup (a QEMU that quits mid-call) at ERROR; the caller reports it.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QMPCommandError(RuntimeError):
    """A QMP call that did not succeed: no socket, no answer in time, or QEMU's error."""

    def __init__(self, message: str, *, error_class: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class


HANDSHAKE_ATTEMPTS = 3


async def _connect(path: Path, timeout: float) -> QMPClient:
    """A negotiated session; a garbled greeting is retried.

    QEMU's monitor serves one client at a time, and a reply to a command a previous client sent
    just before hanging up can reach the next client ahead of its greeting. Nothing has been
    executed on this connection at that point, so trying again is safe.
    """
    for attempt in range(1, HANDSHAKE_ATTEMPTS + 1):
        client = QMPClient(f"qmp-{path.stem}")
        try:
            await asyncio.wait_for(client.connect(str(path)), timeout)
            return client
        except ConnectError as exc:
            await client.disconnect()
            if isinstance(exc.exc, OSError) or attempt == HANDSHAKE_ATTEMPTS:
                raise
            await asyncio.sleep(0.05 * attempt)
        except BaseException:
            await client.disconnect()
            raise
    raise AssertionError("unreachable")


async def _call(path: Path, name: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
    client = await _connect(path, timeout)
    try:
        return await asyncio.wait_for(client.execute(name, arguments), timeout)
    finally:
        await client.disconnect()


def _run(path: Path, name: str, arguments: dict[str, Any] | None, timeout: float) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_call(path, name, arguments, timeout))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from inside an event loop
        return pool.submit(asyncio.run, _call(path, name, arguments, timeout)).result()


def command(vmid: int, name: str, arguments: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run QMP command ``name`` on VM ``vmid``'s QEMU; its ``return`` value."""
    path = vm_file(vmid, "qmp")
    try:
        return _run(path, name, arguments, timeout)
    except ExecuteError as exc:
        raise QMPCommandError(
            f"VM {vmid} qmp command '{name}' failed - {exc.error.error.desc}", error_class=exc.error.error.class_
        ) from None
    except TimeoutError:
        raise QMPCommandError(f"VM {vmid} qmp command '{name}' failed - got timeout") from None
    except ConnectError as exc:
        raise QMPCommandError(f"unable to connect to VM {vmid} qmp socket - {exc.exc or exc}") from None
    except (QMPError, OSError, EOFError) as exc:
        raise QMPCommandError(f"VM {vmid} qmp command '{name}' failed - {exc or type(exc).__name__}") from None


def status(vmid: int, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """QEMU's run state (``running``, ``paused``, ``prelaunch``, ``shutdown`` ...)."""
    return str(command(vmid, "query-status", timeout=timeout)["status"])


def human_monitor(vmid: int, line: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """A human monitor command (``info status``), as ``qm monitor`` sends it."""
    return str(command(vmid, "human-monitor-command", {"command-line": line}, timeout=timeout))
