"""Closed process groups: join a group, multicast in agreed order, receive deliveries and confchgs."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

from replicator.corosync.errors import check, load, retry

CPG_TYPE_AGREED = 1
CS_DISPATCH_ALL = 2
CS_DISPATCH_ONE_NONBLOCKING = 4
CPG_MAX_NAME_LENGTH = 128

cpg_handle_t = ctypes.c_uint64


class CpgName(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("value", ctypes.c_char * CPG_MAX_NAME_LENGTH)]


class CpgAddress(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32), ("reason", ctypes.c_uint32)]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


DELIVER_FN = ctypes.CFUNCTYPE(
    None, cpg_handle_t, ctypes.POINTER(CpgName), ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t
)
CONFCHG_FN = ctypes.CFUNCTYPE(
    None,
    cpg_handle_t,
    ctypes.POINTER(CpgName),
    ctypes.POINTER(CpgAddress),
    ctypes.c_size_t,
    ctypes.POINTER(CpgAddress),
    ctypes.c_size_t,
    ctypes.POINTER(CpgAddress),
    ctypes.c_size_t,
)


class CpgRingId(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("seq", ctypes.c_uint64)]


TOTEM_CONFCHG_FN = ctypes.CFUNCTYPE(None, cpg_handle_t, CpgRingId, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
CPG_MODEL_V1 = 1
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = 1


class CpgModelV1Data(ctypes.Structure):
    _fields_ = [
        ("model", ctypes.c_int),
        ("cpg_deliver_fn", DELIVER_FN),
        ("cpg_confchg_fn", CONFCHG_FN),
        ("cpg_totem_confchg_fn", TOTEM_CONFCHG_FN),
        ("flags", ctypes.c_uint),
    ]


_lib = load("libcpg.so.4")
_lib.cpg_model_initialize.argtypes = [
    ctypes.POINTER(cpg_handle_t),
    ctypes.c_int,
    ctypes.POINTER(CpgModelV1Data),
    ctypes.c_void_p,
]
_lib.cpg_model_initialize.restype = ctypes.c_int
_lib.cpg_finalize.argtypes = [cpg_handle_t]
_lib.cpg_finalize.restype = ctypes.c_int
_lib.cpg_join.argtypes = [cpg_handle_t, ctypes.POINTER(CpgName)]
_lib.cpg_join.restype = ctypes.c_int
_lib.cpg_leave.argtypes = [cpg_handle_t, ctypes.POINTER(CpgName)]
_lib.cpg_leave.restype = ctypes.c_int
_lib.cpg_mcast_joined.argtypes = [cpg_handle_t, ctypes.c_int, ctypes.POINTER(IoVec), ctypes.c_uint]
_lib.cpg_mcast_joined.restype = ctypes.c_int
_lib.cpg_dispatch.argtypes = [cpg_handle_t, ctypes.c_int]
_lib.cpg_dispatch.restype = ctypes.c_int
_lib.cpg_fd_get.argtypes = [cpg_handle_t, ctypes.POINTER(ctypes.c_int)]
_lib.cpg_fd_get.restype = ctypes.c_int
_lib.cpg_local_get.argtypes = [cpg_handle_t, ctypes.POINTER(ctypes.c_uint)]
_lib.cpg_local_get.restype = ctypes.c_int


@dataclass(frozen=True)
class Member:
    nodeid: int
    pid: int


Deliver = Callable[[int, int, bytes], None]
ConfChange = Callable[[list[Member], list[Member], list[Member]], None]
TotemChange = Callable[[int, int, list[int]], None]


def _members(array: ctypes._Pointer[CpgAddress] | None, count: int) -> list[Member]:
    return [Member(array[i].nodeid, array[i].pid) for i in range(count)] if array and count else []


class CpgGroup:
    """One CPG connection joined to one group; callbacks run inside ``dispatch()``.

    Exceptions raised by the callbacks are kept and re-raised from ``dispatch()``, never
    allowed to unwind through C.
    """

    def __init__(
        self, group: str, *, on_deliver: Deliver, on_confchg: ConfChange, on_totem: TotemChange | None = None
    ) -> None:
        encoded = group.encode()
        if not 0 < len(encoded) <= CPG_MAX_NAME_LENGTH:
            raise ValueError(f"CPG group name must be 1..{CPG_MAX_NAME_LENGTH} bytes")
        self.name = CpgName(len(encoded), encoded)
        self._on_deliver, self._on_confchg, self._on_totem = on_deliver, on_confchg, on_totem
        self._errors: list[BaseException] = []
        # References kept on the instance: the C library calls these for as long as we are connected.
        self._model = CpgModelV1Data(
            CPG_MODEL_V1,
            DELIVER_FN(self._deliver),
            CONFCHG_FN(self._confchg),
            TOTEM_CONFCHG_FN(self._totem),
            CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
        )
        self.handle = cpg_handle_t(0)
        retry(
            "cpg_model_initialize",
            lambda: _lib.cpg_model_initialize(ctypes.byref(self.handle), CPG_MODEL_V1, ctypes.byref(self._model), None),
        )
        retry("cpg_join", lambda: _lib.cpg_join(self.handle, ctypes.byref(self.name)))

    def _deliver(self, _handle: int, _group: object, nodeid: int, pid: int, msg: int, length: int) -> None:
        try:
            self._on_deliver(nodeid, pid, ctypes.string_at(msg, length))
        except BaseException as exc:  # must not unwind into C; re-raised by dispatch()
            self._errors.append(exc)

    def _confchg(
        self,
        _h: int,
        _g: object,
        members: ctypes._Pointer[CpgAddress],
        n_members: int,
        left: ctypes._Pointer[CpgAddress],
        n_left: int,
        joined: ctypes._Pointer[CpgAddress],
        n_joined: int,
    ) -> None:
        try:
            self._on_confchg(_members(members, n_members), _members(left, n_left), _members(joined, n_joined))
        except BaseException as exc:  # likewise
            self._errors.append(exc)

    def _totem(self, _handle: int, ring: CpgRingId, count: int, members: ctypes._Pointer[ctypes.c_uint32]) -> None:
        """Totem membership (all nodes, ring id): the ring id orders configurations for sync."""
        try:
            if self._on_totem is not None:
                self._on_totem(ring.nodeid, ring.seq, [members[i] for i in range(count)])
        except BaseException as exc:  # must not unwind into C; re-raised by dispatch()
            self._errors.append(exc)

    def local_nodeid(self) -> int:
        nodeid = ctypes.c_uint(0)
        check("cpg_local_get", _lib.cpg_local_get(self.handle, ctypes.byref(nodeid)))
        return nodeid.value

    def fileno(self) -> int:
        fd = ctypes.c_int(-1)
        check("cpg_fd_get", _lib.cpg_fd_get(self.handle, ctypes.byref(fd)))
        return fd.value

    def mcast(self, payload: bytes, *, timeout: float = 5.0) -> None:
        """Multicast in agreed (total) order, retrying CS_ERR_TRY_AGAIN with backoff."""
        buffer = ctypes.create_string_buffer(payload, len(payload))
        iov = IoVec(ctypes.cast(buffer, ctypes.c_void_p), len(payload))
        retry(
            "cpg_mcast_joined",
            lambda: _lib.cpg_mcast_joined(self.handle, CPG_TYPE_AGREED, ctypes.byref(iov), 1),
            timeout=timeout,
        )

    def dispatch(self, *, block: bool = False) -> None:
        """Run pending callbacks (all of them), then raise the first error a callback raised."""
        check("cpg_dispatch", _lib.cpg_dispatch(self.handle, 3 if block else CS_DISPATCH_ALL))
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error

    def close(self) -> None:
        _lib.cpg_leave(self.handle, ctypes.byref(self.name))
        _lib.cpg_finalize(self.handle)
