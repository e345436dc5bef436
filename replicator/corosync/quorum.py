"""votequorum: quorate, expected and total votes, ``pvecm expected``."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from replicator.corosync.errors import check, load, retry

VOTEQUORUM_INFO_TWONODE = 1
VOTEQUORUM_INFO_QUORATE = 2
VOTEQUORUM_INFO_WAIT_FOR_ALL = 4
VOTEQUORUM_QDEVICE_MAX_NAME_LEN = 255
VOTEQUORUM_LOCAL_NODEID = 0  # getinfo(0) asks about the local node

votequorum_handle_t = ctypes.c_uint64


class VotequorumInfo(ctypes.Structure):
    _fields_ = [
        ("node_id", ctypes.c_uint),
        ("node_state", ctypes.c_uint),
        ("node_votes", ctypes.c_uint),
        ("node_expected_votes", ctypes.c_uint),
        ("highest_expected", ctypes.c_uint),
        ("total_votes", ctypes.c_uint),
        ("quorum", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("qdevice_votes", ctypes.c_uint),
        ("qdevice_name", ctypes.c_char * VOTEQUORUM_QDEVICE_MAX_NAME_LEN),
    ]


class VotequorumCallbacks(ctypes.Structure):
    # Notification callbacks are not used (status is polled); NULL pointers are allowed.
    _fields_ = [("votequorum_notify_fn", ctypes.c_void_p), ("votequorum_expectedvotes_notify_fn", ctypes.c_void_p)]


_lib = load("libvotequorum.so.8")
_lib.votequorum_initialize.argtypes = [ctypes.POINTER(votequorum_handle_t), ctypes.POINTER(VotequorumCallbacks)]
_lib.votequorum_initialize.restype = ctypes.c_int
_lib.votequorum_finalize.argtypes = [votequorum_handle_t]
_lib.votequorum_finalize.restype = ctypes.c_int
_lib.votequorum_getinfo.argtypes = [votequorum_handle_t, ctypes.c_uint, ctypes.POINTER(VotequorumInfo)]
_lib.votequorum_getinfo.restype = ctypes.c_int
_lib.votequorum_setexpected.argtypes = [votequorum_handle_t, ctypes.c_uint]
_lib.votequorum_setexpected.restype = ctypes.c_int


@dataclass(frozen=True)
class QuorumInfo:
    node_id: int
    node_votes: int
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    quorate: bool
    two_node: bool
    wait_for_all: bool


class Votequorum:
    """A votequorum connection."""

    def __init__(self) -> None:
        self._callbacks = VotequorumCallbacks(None, None)
        self.handle = votequorum_handle_t(0)
        retry(
            "votequorum_initialize",
            lambda: _lib.votequorum_initialize(ctypes.byref(self.handle), ctypes.byref(self._callbacks)),
        )

    def info(self, nodeid: int = VOTEQUORUM_LOCAL_NODEID) -> QuorumInfo:
        raw = VotequorumInfo()
        check("votequorum_getinfo", _lib.votequorum_getinfo(self.handle, nodeid, ctypes.byref(raw)))
        return QuorumInfo(
            node_id=raw.node_id,
            node_votes=raw.node_votes,
            expected_votes=raw.node_expected_votes,
            highest_expected=raw.highest_expected,
            total_votes=raw.total_votes,
            quorum=raw.quorum,
            quorate=bool(raw.flags & VOTEQUORUM_INFO_QUORATE),
            two_node=bool(raw.flags & VOTEQUORUM_INFO_TWONODE),
            wait_for_all=bool(raw.flags & VOTEQUORUM_INFO_WAIT_FOR_ALL),
        )

    def set_expected(self, votes: int) -> None:
        """``pvecm expected N``: lower the expected votes at runtime (may make a partition quorate)."""
        if votes < 1:
            raise ValueError("expected votes must be at least 1")
        check("votequorum_setexpected", _lib.votequorum_setexpected(self.handle, votes))

    def close(self) -> None:
        _lib.votequorum_finalize(self.handle)
