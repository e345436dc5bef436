"""Run with a node's environment: fail logins on that node, or print what it counts for a login.

``fail <user> <address> <count>``: that many wrong-password logins through the login service.
``counts <user> <address>``: the failures the node counts (its own plus the other nodes'
published ones), whether the others' were known, and the delay a login would wait.
"""

from __future__ import annotations

import contextlib
import json
import sys

import django

django.setup()

from authz import authentication, throttle  # noqa: E402
from authz.exceptions import AuthenticationFailed  # noqa: E402


def main(command: str, user: str, address: str, *rest: str) -> dict[str, object]:
    if command == "fail":
        for _ in range(int(rest[0])):
            with contextlib.suppress(AuthenticationFailed):
                authentication.login(user, "wrong-password", rhost=address)
        return {"done": True}
    attempt = throttle.Attempt.of(user, address)
    users, addresses, known = throttle.failures(attempt)
    return {"user": users, "address": addresses, "known": known, "delay": throttle.delay(attempt)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
