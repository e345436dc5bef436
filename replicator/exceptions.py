"""Errors of the replicated store, raised to writers with messages meant for operators."""


class ReplicationError(Exception):
    """Base class: a change set was not applied."""

    code = "error"
    http_status = 500


class ConflictError(ReplicationError):
    """The writer's base version is stale, the row exists already, or a constraint failed."""

    code = "conflict"
    http_status = 409


class NotQuorateError(ReplicationError):
    """The node's partition has no quorum, so the configuration is read-only (Proxmox's wording)."""

    code = "not_quorate"
    http_status = 503

    def __init__(self, message: str = "cluster not ready - no quorum?") -> None:
        super().__init__(message)


class ChangeSetTooLargeError(ReplicationError):
    """A change set exceeds PVE_MAX_CHANGESET_BYTES; refused before it is sent."""

    code = "too_large"
    http_status = 413


class InvalidChangeSetError(ReplicationError):
    """A change set is malformed (unknown model or field, bad value)."""

    code = "invalid"
    http_status = 400


class ReplicatorUnavailableError(ReplicationError):
    """The local replicator could not be reached or did not answer in time.

    When raised after the change set was sent, the outcome is indeterminate: it was applied
    everywhere or nowhere, never partially.
    """

    code = "unavailable"
    http_status = 503

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail  # the socket path and the OS error: for the node's log, not for API clients


class BulkWriteError(ReplicationError):
    """A bulk ORM path (update, bulk_create, raw SQL) was used on a replicated model."""

    code = "bulk"


ERRORS_BY_CODE: dict[str, type[ReplicationError]] = {
    cls.code: cls
    for cls in (
        ReplicationError,
        ConflictError,
        NotQuorateError,
        ChangeSetTooLargeError,
        InvalidChangeSetError,
        ReplicatorUnavailableError,
        BulkWriteError,
    )
}
