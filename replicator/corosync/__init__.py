"""ctypes bindings of corosync's client libraries (CPG, votequorum, cmap, cfg); no Django here.

Corosync IPC is per network namespace: a process uses the corosync of the namespace it runs in.
"""

from replicator.corosync.errors import CorosyncError, TryAgain, check

__all__ = ["CorosyncError", "TryAgain", "check"]
