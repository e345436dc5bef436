"""Access-control errors."""


class AuthenticationFailed(Exception):
    """Wrong password, unknown or disabled user, bad ticket: deliberately one message."""

    def __init__(self, message: str = "authentication failure") -> None:
        super().__init__(message)


class AccessError(ValueError):
    """Bad input to an access-control change (HTTP 400); nothing was changed."""


class AccessDenied(AccessError):
    """A refused access-control change (HTTP 403); nothing was changed."""
