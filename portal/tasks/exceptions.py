"""Errors of the task framework; mapped to HTTP once, in ``portal.apps``."""

from __future__ import annotations


class TaskError(Exception):
    """Base of task errors (HTTP 500 with the message, as Proxmox's plain ``die``)."""

    status = 500


class UnknownOperation(TaskError):
    """``submit`` was given an operation name nobody registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task operation '{name}'")


class TaskFailed(TaskError):
    """A followed task ended with an error; the message is its exit status."""

    def __init__(self, upid: str, exitstatus: str) -> None:
        super().__init__(exitstatus)
        self.upid = upid
        self.exitstatus = exitstatus
