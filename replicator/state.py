"""Process-wide switch: only the replicator daemon writes the cluster database directly."""

_applying = False


def applying() -> bool:
    """True inside the replicator process, where replicated models write the database."""
    return _applying


def enter_apply_mode() -> None:
    """Called once by the replicator daemon at start."""
    global _applying
    _applying = True
