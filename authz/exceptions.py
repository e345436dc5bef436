"""Access-control errors."""


class AuthenticationFailed(Exception):
    """Wrong password, unknown or disabled user, bad ticket: deliberately one message."""

    def __init__(self, message: str = "authentication failure") -> None:
        super().__init__(message)
