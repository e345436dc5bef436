"""votequorum: quorate, expected and total votes, ``pvecm expected``, change notifications."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

from replicator.corosync.errors import CorosyncError, check, load, retry

VOTEQUORUM_INFO_TWONODE = 1
VOTEQUORUM_INFO_QUORATE = 2
VOTEQUORUM_INFO_WAIT_FOR_ALL = 4
VOTEQUORUM_INFO_LAST_MAN_STANDING = 8
VOTEQUORUM_INFO_AUTO_TIE_BREAKER = 16
VOTEQUORUM_INFO_ALLOW_DOWNSCALE = 32
VOTEQUORUM_INFO_QDEVICE_REGISTERED = 64
VOTEQUORUM_INFO_QDEVICE_ALIVE = 128
VOTEQUORUM_INFO_QDEVICE_CAST_VOTE = 256
VOTEQUORUM_INFO_QDEVICE_MASTER_WINS = 512
VOTEQUORUM_QDEVICE_MAX_NAME_LEN = 255
VOTEQUORUM_LOCAL_NODEID = 0  # getinfo(0) asks about the local node
VOTEQUORUM_NODESTATE_MEMBER = 1
CS_ERR_NOT_EXIST = 12
CS_TRACK_CURRENT = 1
CS_TRACK_CHANGES = 2
CS_DISPATCH_ALL = 2

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


class VotequorumNode(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint32), ("state", ctypes.c_uint32)]


QUORUM_FN = ctypes.CFUNCTYPE(
    None, votequorum_handle_t, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(VotequorumNode)
)
EXPECTED_FN = ctypes.CFUNCTYPE(None, votequorum_handle_t, ctypes.c_uint64, ctypes.c_uint32)


class VotequorumCallbacks(ctypes.Structure):
    # corosync 3.x layout; the node-list notification is not used (NULL).
    _fields_ = [
        ("votequorum_quorum_notify_fn", QUORUM_FN),
        ("votequorum_expectedvotes_notify_fn", EXPECTED_FN),
        ("votequorum_nodelist_notify_fn", ctypes.c_void_p),
    ]


_lib = load("libvotequorum.so.8")
_lib.votequorum_initialize.argtypes = [ctypes.POINTER(votequorum_handle_t), ctypes.POINTER(VotequorumCallbacks)]
_lib.votequorum_initialize.restype = ctypes.c_int
_lib.votequorum_finalize.argtypes = [votequorum_handle_t]
_lib.votequorum_finalize.restype = ctypes.c_int
_lib.votequorum_getinfo.argtypes = [votequorum_handle_t, ctypes.c_uint, ctypes.POINTER(VotequorumInfo)]
_lib.votequorum_getinfo.restype = ctypes.c_int
_lib.votequorum_setexpected.argtypes = [votequorum_handle_t, ctypes.c_uint]
_lib.votequorum_setexpected.restype = ctypes.c_int
_lib.votequorum_trackstart.argtypes = [votequorum_handle_t, ctypes.c_uint64, ctypes.c_uint]
_lib.votequorum_trackstart.restype = ctypes.c_int
_lib.votequorum_fd_get.argtypes = [votequorum_handle_t, ctypes.POINTER(ctypes.c_int)]
_lib.votequorum_fd_get.restype = ctypes.c_int
_lib.votequorum_dispatch.argtypes = [votequorum_handle_t, ctypes.c_int]
_lib.votequorum_dispatch.restype = ctypes.c_int

QuorumChange = Callable[[bool, list[int]], None]
ExpectedChange = Callable[[int], None]


@dataclass(frozen=True)
class QuorumInfo:
    node_id: int
    node_state: int  # 1 member, 2 dead, 3 leaving
    node_votes: int
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    quorate: bool
    two_node: bool
    wait_for_all: bool
    flags: int = 0  # VOTEQUORUM_INFO_* bits, qdevice state included
    qdevice_votes: int = 0
    qdevice_name: str = ""

    @property
    def qdevice_registered(self) -> bool:
        return bool(self.flags & VOTEQUORUM_INFO_QDEVICE_REGISTERED)

    @property
    def qdevice_alive(self) -> bool:
        return bool(self.flags & VOTEQUORUM_INFO_QDEVICE_ALIVE)

    @property
    def qdevice_cast_vote(self) -> bool:
        return bool(self.flags & VOTEQUORUM_INFO_QDEVICE_CAST_VOTE)

    @property
    def qdevice_master_wins(self) -> bool:
        return bool(self.flags & VOTEQUORUM_INFO_QDEVICE_MASTER_WINS)


class Votequorum:
    """A votequorum connection; notifications (after ``track()``) run inside ``dispatch()``."""

    def __init__(self, *, on_quorum: QuorumChange | None = None, on_expected: ExpectedChange | None = None) -> None:
        self._on_quorum, self._on_expected = on_quorum, on_expected
        self._errors: list[BaseException] = []
        # Kept on the instance: the library calls them for as long as the handle lives.
        self._callbacks = VotequorumCallbacks(QUORUM_FN(self._quorum), EXPECTED_FN(self._expected), None)
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
            node_state=raw.node_state,
            node_votes=raw.node_votes,
            expected_votes=raw.node_expected_votes,
            highest_expected=raw.highest_expected,
            total_votes=raw.total_votes,
            quorum=raw.quorum,
            quorate=bool(raw.flags & VOTEQUORUM_INFO_QUORATE),
            two_node=bool(raw.flags & VOTEQUORUM_INFO_TWONODE),
            wait_for_all=bool(raw.flags & VOTEQUORUM_INFO_WAIT_FOR_ALL),
            flags=raw.flags,
            qdevice_votes=raw.qdevice_votes,
            qdevice_name=raw.qdevice_name.decode(errors="replace"),
        )

    def node_votes(self, nodeid: int) -> int | None:
        """The votes votequorum counts for ``nodeid`` now; None for a node it does not know (never seen)."""
        try:
            return self.info(nodeid).node_votes
        except CorosyncError as exc:
            if exc.code == CS_ERR_NOT_EXIST:
                return None
            raise

    def _quorum(
        self, _handle: int, _context: int, quorate: int, count: int, nodes: ctypes._Pointer[VotequorumNode]
    ) -> None:
        try:
            if self._on_quorum is not None:
                # the nodes votequorum counts as members now (dead nodes and a QDevice, id 0, left out)
                entries = [nodes[i] for i in range(count)] if count else []
                members = [e.nodeid for e in entries if e.state == VOTEQUORUM_NODESTATE_MEMBER and e.nodeid]
                self._on_quorum(bool(quorate), members)
        except BaseException as exc:  # must not unwind into C; re-raised by dispatch()
            self._errors.append(exc)

    def _expected(self, _handle: int, _context: int, expected: int) -> None:
        try:
            if self._on_expected is not None:
                self._on_expected(expected)
        except BaseException as exc:  # likewise
            self._errors.append(exc)

    def track(self) -> None:
        """Deliver the current state and every later quorum or expected-votes change."""
        check("votequorum_trackstart", _lib.votequorum_trackstart(self.handle, 0, CS_TRACK_CURRENT | CS_TRACK_CHANGES))

    def fileno(self) -> int:
        fd = ctypes.c_int(-1)
        check("votequorum_fd_get", _lib.votequorum_fd_get(self.handle, ctypes.byref(fd)))
        return fd.value

    def dispatch(self) -> None:
        check("votequorum_dispatch", _lib.votequorum_dispatch(self.handle, CS_DISPATCH_ALL))
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error

    def set_expected(self, votes: int) -> None:
        """``pvecm expected N``: lower the expected votes at runtime (may make a partition quorate)."""
        if votes < 1:
            raise ValueError("expected votes must be at least 1")
        check("votequorum_setexpected", _lib.votequorum_setexpected(self.handle, votes))

    def close(self) -> None:
        _lib.votequorum_finalize(self.handle)
