"""A node's processes live and die with their runner: a parent-death signal, and one runner per data directory.

Each child runs in a session of its own (so a terminal's Ctrl-C reaches only the runner), so
nothing ends it when the runner is killed outright. :func:`die_with_parent` arms Linux's
parent-death signal in the child between fork and exec: SIGKILL the moment the runner is gone,
however it went. :func:`lock_node` takes an exclusive ``flock`` on a file in the data directory
that the runner holds and hands to every child: the lock is released only when the last process
holding it has ended, so a second runner refuses the data directory while any process of the
first one lives (a child that escaped the signal included). No Django here.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
LOCK_NAME = "runnode.lock"
LOCK_WAIT = 5.0  # seconds a runner waits for the processes of a previous one to end (a restart after kill -9)


def _prctl() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _prctl()  # resolved once, before any fork: the child only calls it


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``signum`` when the thread that started it ends.

    The kernel sends the signal when the *thread* that forked the child exits, so children are
    started and restarted by the runner's main loop only. Between fork and the ``prctl`` the
    runner may already have died: the child then sees another parent and ends at once. Nothing
    here imports, logs or takes a lock (it runs in a freshly forked child of a threaded process).
    """
    parent = os.getpid()

    def arm() -> None:
        if _PRCTL(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return arm


def end_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Arm the parent-death signal in this (already running) process, whose parent is ``parent``.

    For processes started by a library rather than by a ``preexec_fn`` (uvicorn's spawned web
    workers): if ``parent`` is already gone, the signal comes at once.
    """
    if _PRCTL(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


class NodeLocked(Exception):
    """Another runner, or a process it started, still uses this data directory."""


def lock_node(data_dir: Path, *, wait: float = LOCK_WAIT) -> int:
    """Lock ``data_dir`` for this runner; the descriptor, to be inherited by every child.

    Waits up to ``wait`` seconds (processes of a runner killed a moment ago are on their way
    out), then raises :class:`NodeLocked` naming the processes that hold the lock.
    """
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                holders = ", ".join(f"{pid} ({name})" for pid, name in lock_holders(path)) or "unknown"
                raise NodeLocked(
                    f"{data_dir} is in use by another runnode or the processes it started "
                    f"(they hold {path}: {holders}); stop them first"
                ) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holders(path: Path) -> list[tuple[int, str]]:
    """The processes with ``path`` open (pid and command name), from /proc."""
    found: list[tuple[int, str]] = []
    target = str(path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        found.append((int(entry.name), (entry / "comm").read_text().strip()))
                        break
    return sorted(found)
