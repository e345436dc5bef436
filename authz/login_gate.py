"""Login attempts wait their turn in the event loop: one at a time per client address and node.

Django under the ASGI server runs each request's sync code in a thread of its own, so a delay
does not starve a fixed pool; what an attacker could still do is send many attempts at once from
one address, each holding a connection and a thread and each hashing a password in parallel.
:class:`LoginGateMiddleware` lets one attempt per address through at a time, after its delay
(``authz.throttle.delay``, waited with ``asyncio.sleep``), so parallel requests do not multiply
an address's rate; at most ``MAX_WAITING`` attempts of one address are open at once, more are
answered 429 at once, without a password check or a count. It comes first in ``MIDDLEWARE``:
below a sync middleware Django would run it in sync mode, in a blocked thread.

Login views are marked with a ``login_attempt`` attribute (on the view function, or on a DRF
view's class): ``login_attempt(request) -> Attempt | None`` reads the attempt from the request
exactly as the view will (None: not a password login). The login service checks with
:func:`passed` that its attempt went through the gate; one that did not (a management command,
a view not marked) waits in the service itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from authz import throttle

log = logging.getLogger(__name__)

MAX_WAITING = 8
TOO_MANY = "too many login attempts from this address at once - try again later"

Extractor = Callable[[HttpRequest], "throttle.Attempt | None"]
_passed: ContextVar[throttle.Attempt | None] = ContextVar("login_attempt_passed", default=None)


@dataclass
class _Turn:
    """The attempts of one address: the lock lets one through at a time; ``waiting`` bounds the queue."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


_turns: dict[str, _Turn] = {}  # only addresses with attempts in flight: bounded by open connections


def passed(attempt: throttle.Attempt) -> bool:
    """Whether this request's ``attempt`` has waited its turn and delay at the gate."""
    return _passed.get() == attempt


def extractor_for(request: HttpRequest) -> Extractor | None:
    """The ``login_attempt`` function of the view the request goes to, if it is a login view."""
    try:
        match = resolve(request.path_info, urlconf=getattr(request, "urlconf", None))
    except Resolver404:
        return None
    view = match.func
    return getattr(view, "login_attempt", None) or getattr(getattr(view, "cls", None), "login_attempt", None)


def _too_many(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api2/"):
        from portal.api.errors import json_error

        return json_error(429, TOO_MANY)
    return HttpResponse(TOO_MANY, status=429, content_type="text/plain")


class LoginGateMiddleware:
    """Holds password logins (POST to a marked view) in the event loop until their turn and delay.

    Async only, and first in ``MIDDLEWARE``: Django then runs the rest of the chain (sync) in the
    request's thread after the gate, and no thread is blocked while the gate waits.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        get_response = self.get_response
        extract = extractor_for(request) if request.method == "POST" else None
        attempt = await sync_to_async(extract)(request) if extract is not None else None
        if attempt is None:
            return await get_response(request)
        turn = _turns.setdefault(attempt.address, _Turn())
        if turn.waiting >= MAX_WAITING:
            log.warning("login attempt refused: %d attempts from %s are waiting already", turn.waiting, attempt.address)
            return _too_many(request)
        turn.waiting += 1
        try:
            async with turn.lock:
                wait = await sync_to_async(throttle.delay)(attempt)
                if wait > 0:
                    await asyncio.sleep(wait)
                token = _passed.set(attempt)
                try:
                    return await get_response(request)
                finally:
                    _passed.reset(token)
        finally:
            turn.waiting -= 1
            if turn.waiting == 0 and _turns.get(attempt.address) is turn:
                del _turns[attempt.address]
