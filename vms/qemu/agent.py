"""The QEMU guest agent (QGA) client, over the VM's ``qga`` socket, as qemu-server speaks to it.

QEMU listens on the socket (one client at a time); whatever a previous client left unread may
still come out of the guest. So every call opens a connection, sends 0xFF (the agent drops any
half-read input) and ``guest-sync-delimited`` with a random id, skips everything up to the 0xFF
that precedes the answer carrying that id, then sends the command and reads its one answer.
Errors are worded as qemu-server words them ("VM 100 is not running", "QEMU guest agent is not
running"), and every command has its own timeout (qemu-server's QMPClient values).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import threading
import time
from typing import Any

from vms import runtime_paths

SYNC_TIMEOUT = 3.0  # qemu-server pings the agent with a 3 s timeout before any command
DEFAULT_TIMEOUT = 5.0
TIMEOUTS = {
    "guest-ping": 3.0,
    "guest-fsfreeze-freeze": 3600.0,
    "guest-fsfreeze-thaw": 180.0,
    "guest-fstrim": 600.0,
    "guest-shutdown": 600.0,
    "guest-suspend-disk": 600.0,
    "guest-suspend-ram": 600.0,
    "guest-suspend-hybrid": 600.0,
}
# The commands without parameters the API and ``qm agent`` offer (Agent.pm's $guest_agent_commands).
SIMPLE_COMMANDS = (
    "ping", "get-time", "info", "fsfreeze-status", "fsfreeze-freeze", "fsfreeze-thaw", "fstrim",
    "network-get-interfaces", "get-vcpus", "get-fsinfo", "get-memory-blocks", "get-memory-block-info",
    "suspend-hybrid", "suspend-ram", "suspend-disk", "shutdown", "get-host-name", "get-osinfo",
    "get-users", "get-timezone",
)  # fmt: skip
# The agent answers these only on failure; on success the guest goes away (EOF) or nothing comes.
NO_ANSWER = frozenset({"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"})
MAX_LINE = 64 * 1024 * 1024  # a file-read chunk of 1 MiB is ~1.4 MiB of base64; exec output is bounded too

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


class AgentError(Exception):
    """A guest-agent call failed; the message is what Proxmox prints."""


class VMNotRunning(AgentError):
    def __init__(self, vmid: int) -> None:
        super().__init__(f"VM {vmid} is not running")


class AgentNotRunning(AgentError):
    def __init__(self) -> None:
        super().__init__("QEMU guest agent is not running")


class AgentNotConfigured(AgentError):
    def __init__(self) -> None:
        super().__init__("No QEMU guest agent configured")


class AgentCommandError(AgentError):
    """The agent answered with an error (``{"error": {"class", "desc"}}``)."""

    def __init__(self, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error or {}


def _lock(vmid: int) -> threading.Lock:
    """One call at a time per VM in this process (QEMU serves one client; the rest would queue)."""
    with _locks_guard:
        return _locks.setdefault(vmid, threading.Lock())


class _Connection:
    """One connection to the agent socket with a deadline for each read."""

    def __init__(self, vmid: int) -> None:
        self.vmid = vmid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buffer = b""
        try:
            self.sock.settimeout(SYNC_TIMEOUT)
            self.sock.connect(str(runtime_paths.vm_file(vmid, "qga")))
        except OSError:
            self.sock.close()
            raise AgentNotRunning() from None

    def close(self) -> None:
        self.sock.close()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(payload)

    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False on EOF. TimeoutError once the deadline passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        if len(self.buffer) > MAX_LINE:
            raise AgentError(f"VM {self.vmid} qga answer too large")
        return True

    def read_line(self, deadline: float) -> bytes | None:
        """The next line (without its newline), or None at EOF."""
        while b"\n" not in self.buffer:
            if not self._fill(deadline):
                return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def sync(self, deadline: float) -> None:
        """``guest-sync-delimited`` with a random id; everything before the answer is dropped."""
        sync_id = secrets.randbelow(2**31 - 1) + 1
        self.send(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode())
        while True:
            while b"\xff" not in self.buffer:
                self.buffer = b""
                if not self._fill(deadline):
                    raise AgentNotRunning()
            self.buffer = self.buffer[self.buffer.index(b"\xff") + 1 :]
            line = self.read_line(deadline)
            if line is None:
                raise AgentNotRunning()
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict) and answer.get("return") == sync_id:
                return


def _answer(vmid: int, command: str, answer: Any) -> Any:
    """The ``return`` value; an agent error as AgentCommandError."""
    if isinstance(answer, dict) and "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {"desc": str(answer["error"])}
        raise AgentCommandError(str(error.get("desc", "unknown error")), error)
    if not isinstance(answer, dict) or "return" not in answer:
        raise AgentError(f"VM {vmid} qga command '{command}' failed - unexpected answer")
    return answer["return"]


def command(vmid: int, execute: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
    """Run one agent command (``guest-...``) on a running VM and return its ``return`` value.

    VMNotRunning without QEMU, AgentNotRunning when the agent does not answer the sync,
    AgentCommandError when it answers with an error, AgentError on a timeout or a lost connection.
    Commands that answer only on failure (``guest-shutdown``) return None once the guest went away.
    """
    if runtime_paths.vm_pid(vmid) is None:
        raise VMNotRunning(vmid)
    wait = timeout if timeout is not None else TIMEOUTS.get(execute, DEFAULT_TIMEOUT)
    with _lock(vmid):
        connection = _Connection(vmid)
        try:
            try:
                connection.sync(time.monotonic() + min(SYNC_TIMEOUT, wait))
            except (TimeoutError, OSError):
                raise AgentNotRunning() from None
            request = {"execute": execute, "arguments": arguments or {}}
            deadline = time.monotonic() + wait
            try:
                connection.send(json.dumps(request).encode() + b"\n")
                line = connection.read_line(deadline)
            except TimeoutError:
                if execute in NO_ANSWER:
                    return None
                raise AgentError(f"VM {vmid} qga command '{execute}' failed - got timeout") from None
            except OSError as exc:
                raise AgentError(f"VM {vmid} qga command '{execute}' failed - {exc}") from None
            if line is None:
                if execute in NO_ANSWER:
                    return None
                raise AgentError(f"VM {vmid} qga command '{execute}' failed - client closed connection")
            try:
                answer = json.loads(line)
            except ValueError:
                raise AgentError(f"VM {vmid} qga command '{execute}' failed - malformed answer") from None
            return _answer(vmid, execute, answer)
        finally:
            connection.close()


def ping(vmid: int) -> bool:
    """Whether the agent answers (qemu-server's ``qga_check_running``)."""
    try:
        command(vmid, "guest-ping")
    except AgentError:
        return False
    return True


def agent_configured(config: dict[str, Any]) -> bool:
    """Whether the VM config has an ``agent`` key at all (qemu-server's check: defined, not enabled)."""
    return config.get("agent") not in (None, "")


def assert_available(vmid: int, config: dict[str, Any]) -> None:
    """qemu-server's ``assert_agent_available``: configured, the VM runs, the agent answers."""
    if not agent_configured(config):
        raise AgentNotConfigured()
    if runtime_paths.vm_pid(vmid) is None:
        raise VMNotRunning(vmid)
    if not ping(vmid):
        raise AgentNotRunning()


def simple_command(vmid: int, config: dict[str, Any], name: str) -> Any:
    """``guest-<name>`` after qemu-server's availability check; an agent error becomes the result
    (``{"error": {...}}``), as the API's per-command endpoints and ``qm agent`` answer it."""
    assert_available(vmid, config)
    try:
        return command(vmid, f"guest-{name}")
    except AgentCommandError as exc:
        return {"error": exc.error}


def checked(vmid: int, execute: str, arguments: dict[str, Any], failure: str, **kwargs: Any) -> Any:
    """A command whose agent error reads ``Agent error: <desc>`` (qemu-server's ``agent_cmd``)."""
    try:
        return command(vmid, execute, arguments, **kwargs)
    except AgentCommandError as exc:
        raise AgentCommandError(f"Agent error: {exc}", exc.error) from None
    except AgentError as exc:
        if isinstance(exc, VMNotRunning | AgentNotRunning):
            raise
        raise AgentError(f"Agent error: {failure} - {exc}") from None


def shutdown(vmid: int, *, mode: str = "powerdown", timeout: float | None = None) -> None:
    """Ask the guest to shut down through the agent (``guest-shutdown``); returns once it was sent and
    the guest did not refuse. The caller waits for QEMU to exit."""
    command(vmid, "guest-shutdown", {"mode": mode}, timeout=timeout if timeout is not None else 2.0)


def execute(vmid: int, argv: list[str] | None, input_data: str | None = None) -> dict[str, Any]:
    """``guest-exec`` with captured output: ``{"pid": n}`` (qemu-server's ``qemu_exec``)."""
    arguments: dict[str, Any] = {"capture-output": True}
    if argv:
        arguments["path"] = argv[0]
        arguments["arg"] = list(argv[1:])
    if input_data is not None:
        arguments["input-data"] = base64.b64encode(input_data.encode()).decode()
    if "path" not in arguments and "input-data" not in arguments:
        raise AgentError("command or input-data (or both) required")
    failure = "can't execute command"
    if argv:
        failure += f" ({' '.join(argv)})"
    if input_data is not None:
        failure += " (input-data given)"
    result: dict[str, Any] = checked(vmid, "guest-exec", arguments, failure)
    return result


def exec_status(vmid: int, pid: int) -> dict[str, Any]:
    """``guest-exec-status`` with the output decoded and booleans as 0/1 (as qemu-server returns them)."""
    result: dict[str, Any] = dict(
        checked(vmid, "guest-exec-status", {"pid": pid}, f"can't get exec status for '{pid}'")
    )
    for key in ("out-data", "err-data"):
        if result.get(key):
            with contextlib.suppress(ValueError):
                result[key] = base64.b64decode(result[key]).decode("utf-8", errors="replace")
    return {key: int(value) if isinstance(value, bool) else value for key, value in result.items()}


def file_read(vmid: int, path: str, *, count: int, offset: int = 0, decode: bool = True) -> dict[str, Any]:
    """Read up to ``count`` bytes of a guest file in 1 MiB chunks (qemu-server's ``file-read``)."""
    handle = checked(vmid, "guest-file-open", {"path": path}, "can't open file")
    chunks: list[str] = []
    read, eof = 0, False
    try:
        if offset > 0:
            checked(
                vmid,
                "guest-file-seek",
                {"handle": handle, "offset": offset, "whence": "set"},
                "can't seek to offset position",
            )
        while read < count and not eof:
            chunk = checked(
                vmid, "guest-file-read", {"handle": handle, "count": min(count - read, 1 << 20)}, "can't read from file"
            )
            chunks.append(str(chunk.get("buf-b64", "")))
            read += int(chunk.get("count", 0))
            eof = bool(chunk.get("eof", False))
    finally:
        with contextlib.suppress(AgentError):
            command(vmid, "guest-file-close", {"handle": handle})
    if decode:
        text = b"".join(base64.b64decode(chunk) for chunk in chunks).decode("utf-8", errors="replace")
    else:
        text = "".join(chunks)
    result: dict[str, Any] = {"content": text, "bytes-read": read}
    if not eof:
        result["truncated"] = 1
    return result


def file_write(vmid: int, path: str, data_b64: str) -> None:
    """Write base64 ``data_b64`` to a guest file, replacing it (qemu-server's ``file-write``)."""
    handle = checked(vmid, "guest-file-open", {"path": path, "mode": "wb"}, "can't open file")
    try:
        checked(vmid, "guest-file-write", {"handle": handle, "buf-b64": data_b64}, "can't write to file")
    finally:
        checked(vmid, "guest-file-close", {"handle": handle}, "can't close file")


def fsfreeze_status(vmid: int) -> str:
    return str(command(vmid, "guest-fsfreeze-status"))


def fsfreeze_freeze(vmid: int) -> int:
    """Freeze the guest's filesystems; the number frozen."""
    return int(checked(vmid, "guest-fsfreeze-freeze", {}, "unable to freeze guest fs"))


def fsfreeze_thaw(vmid: int) -> int:
    return int(checked(vmid, "guest-fsfreeze-thaw", {}, "unable to thaw guest filesystem"))
