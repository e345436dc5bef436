"""Warnings shown on top of the admin index (skewed clocks, ...), from wherever an app finds them.

portal imports no app, so apps register their providers when they are ready, as with ``portal.audit``.
A provider that fails is logged and skipped: a banner never breaks the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Provider = Callable[[], list[str]]
_providers: list[Provider] = []


def register(provider: Provider) -> Provider:
    """Add a source of warning lines (registering the same one twice keeps one)."""
    if provider not in _providers:
        _providers.append(provider)
    return provider


def collect() -> list[str]:
    """Every registered provider's current warnings, in registration order."""
    lines: list[str] = []
    for provider in _providers:
        try:
            lines.extend(provider())
        except Exception:
            log.exception("banner provider %r failed", provider)
    return lines
