"""cmap: read corosync's runtime configuration (cluster name, node list, config_version)."""

from __future__ import annotations

import ctypes
from typing import TypedDict

from replicator.corosync.errors import CorosyncError, check, load, retry

CS_ERR_NOT_EXIST = 12
cmap_handle_t = ctypes.c_uint64

_lib = load("libcmap.so.4")
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None
_lib.cmap_initialize.argtypes = [ctypes.POINTER(cmap_handle_t)]
_lib.cmap_initialize.restype = ctypes.c_int
_lib.cmap_finalize.argtypes = [cmap_handle_t]
_lib.cmap_finalize.restype = ctypes.c_int
_lib.cmap_get_string.argtypes = [cmap_handle_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
_lib.cmap_get_string.restype = ctypes.c_int
_lib.cmap_get_uint32.argtypes = [cmap_handle_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]
_lib.cmap_get_uint32.restype = ctypes.c_int
_lib.cmap_get_uint64.argtypes = [cmap_handle_t, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64)]
_lib.cmap_get_uint64.restype = ctypes.c_int


class NodelistEntry(TypedDict):
    """One ``nodelist.node.N`` entry of corosync.conf as cmap holds it."""

    nodeid: int
    name: str | None
    ring0_addr: str | None


class Cmap:
    """A cmap connection; missing keys read as None."""

    def __init__(self) -> None:
        self.handle = cmap_handle_t(0)
        retry("cmap_initialize", lambda: _lib.cmap_initialize(ctypes.byref(self.handle)))

    def get_string(self, key: str) -> str | None:
        pointer = ctypes.c_void_p(None)
        code = _lib.cmap_get_string(self.handle, key.encode(), ctypes.byref(pointer))
        if code == CS_ERR_NOT_EXIST:
            return None
        check(f"cmap_get_string({key})", code)
        try:
            return ctypes.string_at(pointer).decode()
        finally:
            _libc.free(pointer)

    def get_uint(self, key: str) -> int | None:
        """A uint32 or uint64 key (corosync stores config_version as uint64, nodeids as uint32)."""
        small = ctypes.c_uint32(0)
        code = _lib.cmap_get_uint32(self.handle, key.encode(), ctypes.byref(small))
        if code == 1:
            return small.value
        large = ctypes.c_uint64(0)
        code = _lib.cmap_get_uint64(self.handle, key.encode(), ctypes.byref(large))
        if code == CS_ERR_NOT_EXIST:
            return None
        check(f"cmap_get_uint({key})", code)
        return large.value

    def nodes(self) -> list[NodelistEntry]:
        """``nodelist.node.N.{nodeid,name,ring0_addr}`` entries."""
        result: list[NodelistEntry] = []
        for index in range(1024):
            nodeid = self.get_uint(f"nodelist.node.{index}.nodeid")
            if nodeid is None:
                break
            result.append(
                {
                    "nodeid": nodeid,
                    "name": self.get_string(f"nodelist.node.{index}.name"),
                    "ring0_addr": self.get_string(f"nodelist.node.{index}.ring0_addr"),
                }
            )
        return result

    def nodelist_votes(self) -> int:
        """The votes the nodelist gives its nodes (``quorum_votes``, 1 when not set, as corosync counts)."""
        total = 0
        for index in range(1024):
            if self.get_uint(f"nodelist.node.{index}.nodeid") is None:
                break
            votes = self.get_uint(f"nodelist.node.{index}.quorum_votes")
            total += 1 if votes is None else votes
        return total

    def close(self) -> None:
        _lib.cmap_finalize(self.handle)


__all__ = ["Cmap", "CorosyncError"]
