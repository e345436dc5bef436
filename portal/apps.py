import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from portal.api.errors import register_error
        from portal.tasks.exceptions import TaskError
        from replicator.exceptions import ReplicationError

        # Storage-layer errors: conflicts and malformed writes are 500 as in Proxmox (clients read
        # the message); no quorum and an unreachable replicator are 503; too large is 413.
        register_error(
            ReplicationError,
            lambda exc: {"not_quorate": 503, "unavailable": 503, "too_large": 413}.get(exc.code, 500),
            replication_message,
        )
        register_error(TaskError, lambda exc: exc.status)  # Proxmox's plain ``die``: 500 with the message
        self._discover_operations()

    def _discover_operations(self) -> None:
        """Every app's long-running operations are in ``<app>/operations.py``, imported here (as the admin imports ``admin``)."""
        from portal.tasks import registry

        registry.discover()


def replication_message(exc: Exception) -> str:
    """The operator's message; an unexpected failure inside the replicator (or a bulk write, a
    programming error) says no more than that: its text goes to the log, not to the client."""
    from portal.api.errors import INTERNAL_ERROR

    code = getattr(exc, "code", "error")
    if code in ("error", "bulk"):
        log.error("configuration store error in an API call: %s", exc, exc_info=exc)
        return INTERNAL_ERROR
    if code == "unavailable":  # the socket path and OS error: for the node's log, not for clients
        log.error("%s (%s)", exc, getattr(exc, "detail", ""))
    return str(exc) or type(exc).__name__
