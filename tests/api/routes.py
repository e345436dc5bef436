"""The API's routes as the URL configuration holds them (regex and view), for tests that cover every route."""

from __future__ import annotations

from collections.abc import Iterator

from django.urls import URLPattern, URLResolver


def api_route_regexes() -> Iterator[tuple[str, object]]:
    """(full regex, callback) of each route under /api2/, the 501 catch-all aside."""
    from portal.urls import api

    def walk(patterns: list, prefix: str) -> Iterator[tuple[str, object]]:
        for entry in patterns:
            regex = prefix + entry.pattern.regex.pattern.lstrip("^")
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, regex)
            elif isinstance(entry, URLPattern) and entry.name != "api-not-implemented":
                yield regex, entry.callback

    yield from walk(api, "")
