from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from portal.api.errors import register_error
        from replicator.exceptions import ReplicationError

        # Storage-layer errors: conflicts and malformed writes are 500 as in Proxmox (clients read
        # the message); no quorum and an unreachable replicator are 503; too large is 413.
        register_error(
            ReplicationError, lambda exc: {"not_quorate": 503, "unavailable": 503, "too_large": 413}.get(exc.code, 500)
        )
