"""``cs_error_t`` codes as exceptions, and loading of the shared libraries."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

CS_OK = 1
CS_ERR_LIBRARY = 2
CS_ERR_TRY_AGAIN = 6

CS_ERRORS = {
    2: "CS_ERR_LIBRARY (corosync not running or not reachable)",
    3: "CS_ERR_VERSION",
    4: "CS_ERR_INIT",
    5: "CS_ERR_TIMEOUT",
    6: "CS_ERR_TRY_AGAIN",
    7: "CS_ERR_INVALID_PARAM",
    8: "CS_ERR_NO_MEMORY",
    9: "CS_ERR_BAD_HANDLE",
    10: "CS_ERR_BUSY",
    11: "CS_ERR_ACCESS",
    12: "CS_ERR_NOT_EXIST",
    13: "CS_ERR_NAME_TOO_LONG",
    14: "CS_ERR_EXIST",
    15: "CS_ERR_NO_SPACE",
    16: "CS_ERR_INTERRUPT",
    17: "CS_ERR_NAME_NOT_FOUND",
    18: "CS_ERR_NO_RESOURCES",
    19: "CS_ERR_NOT_SUPPORTED",
    20: "CS_ERR_BAD_OPERATION",
    21: "CS_ERR_FAILED_OPERATION",
    22: "CS_ERR_MESSAGE_ERROR",
    23: "CS_ERR_QUEUE_FULL",
    24: "CS_ERR_QUEUE_NOT_AVAILABLE",
    25: "CS_ERR_BAD_FLAGS",
    26: "CS_ERR_TOO_BIG",
    27: "CS_ERR_NO_SECTIONS",
    28: "CS_ERR_CONTEXT_NOT_FOUND",
    30: "CS_ERR_TOO_MANY_GROUPS",
    100: "CS_ERR_SECURITY",
}


class CorosyncError(Exception):
    """A corosync library call failed; ``code`` is the cs_error_t value."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed: {CS_ERRORS.get(code, f'cs_error_t {code}')}")
        self.call, self.code = call, code


class TryAgain(CorosyncError):
    """CS_ERR_TRY_AGAIN: corosync is busy (flow control, membership change); retry later."""


def check(call: str, code: int) -> None:
    """Raise unless ``code`` is CS_OK."""
    if code != CS_OK:
        raise (TryAgain if code == CS_ERR_TRY_AGAIN else CorosyncError)(call, code)


def retry(call: str, function: Callable[[], int], *, timeout: float = 5.0) -> None:
    """Call ``function`` until it stops answering CS_ERR_TRY_AGAIN (exponential backoff)."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        code = function()
        if code != CS_ERR_TRY_AGAIN or time.monotonic() >= deadline:
            check(call, code)
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def load(name: str) -> ctypes.CDLL:
    """Load a corosync client library (Debian packages libcpg4, libvotequorum8, libcmap4, libcfg7)."""
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise CorosyncError(f"loading {name}", 2) from exc
