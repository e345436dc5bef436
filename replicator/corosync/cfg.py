"""cfg: reload corosync.conf at runtime and kill a node (``pvecm delnode``)."""

from __future__ import annotations

import ctypes

from replicator.corosync.errors import check, load, retry

corosync_cfg_handle_t = ctypes.c_uint64

_lib = load("libcfg.so.7")
_lib.corosync_cfg_initialize.argtypes = [ctypes.POINTER(corosync_cfg_handle_t), ctypes.c_void_p]
_lib.corosync_cfg_initialize.restype = ctypes.c_int
_lib.corosync_cfg_finalize.argtypes = [corosync_cfg_handle_t]
_lib.corosync_cfg_finalize.restype = ctypes.c_int
_lib.corosync_cfg_reload_config.argtypes = [corosync_cfg_handle_t]
_lib.corosync_cfg_reload_config.restype = ctypes.c_int
_lib.corosync_cfg_kill_node.argtypes = [corosync_cfg_handle_t, ctypes.c_uint, ctypes.c_char_p]
_lib.corosync_cfg_kill_node.restype = ctypes.c_int


class Cfg:
    """A cfg connection."""

    def __init__(self) -> None:
        self.handle = corosync_cfg_handle_t(0)
        retry("corosync_cfg_initialize", lambda: _lib.corosync_cfg_initialize(ctypes.byref(self.handle), None))

    def reload(self) -> None:
        """Re-read corosync.conf on every node (``corosync-cfgtool -R``)."""
        check("corosync_cfg_reload_config", _lib.corosync_cfg_reload_config(self.handle))

    def kill_node(self, nodeid: int, reason: str) -> None:
        check("corosync_cfg_kill_node", _lib.corosync_cfg_kill_node(self.handle, nodeid, reason.encode()))

    def close(self) -> None:
        _lib.corosync_cfg_finalize(self.handle)
