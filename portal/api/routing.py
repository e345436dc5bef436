"""URL patterns for Proxmox-style paths: ``{placeholder}`` segments, optional trailing slash, 501 fallback.

Placeholders match one segment (``[^/]+``), so UPIDs with ``:``, ``@`` and ``!`` route as they
are. The server (uvicorn, Django's WSGI handler, the test client) percent-decodes the path once
before routing, exactly as Proxmox does, so Terraform's ``%21`` arrives as ``!``; values are not
decoded a second time (a literal ``%`` stays a ``%``). Nothing here ever redirects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from django.urls import URLPattern, URLResolver, re_path

from portal.api.errors import not_implemented

PREFIX = "api2/json/"
FORMATS = r"api2/(?:json|extjs)"  # the same handlers; :mod:`portal.api.extjs` re-wraps the extjs answers
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # also read by the declarations and the description
SEGMENT = r"[^/]+"


def template_regex(template: str, rest: frozenset[str] = frozenset()) -> str:
    """``nodes/{node}/qemu`` -> ``nodes/(?P<node>[^/]+)/qemu`` (literal parts escaped); a placeholder
    named in ``rest`` takes the rest of the path, slashes and all (a volume id)."""
    parts: list[str] = []
    position = 0
    for match in [*PLACEHOLDER.finditer(template), None]:
        literal = template[position : match.start() if match else len(template)]
        if "{" in literal or "}" in literal:
            raise ValueError(f"bad placeholder in API path template {template!r}")
        parts.append(re.escape(literal))
        if match:
            parts.append(f"(?P<{match.group(1)}>{'.+?' if match.group(1) in rest else SEGMENT})")
            position = match.end()
    return "".join(parts)


def api_path(
    template: str, view: Callable[..., Any], name: str | None = None, rest: frozenset[str] = frozenset()
) -> URLPattern:
    """A route for ``/api2/json/<template>`` (and ``/api2/extjs/...``), with or without a trailing slash."""
    regex = template_regex(template.strip("/"), rest)
    route = re_path(rf"^{FORMATS}{'/' + regex if regex else ''}/?$", view, name=name)  # type: ignore[arg-type]  # None: Django's default
    route.pve_template = "/" + template.strip("/")  # type: ignore[attr-defined]  # read by portal.api.openapi
    return route


def catch_all() -> URLPattern:
    """Everything else under /api2/json (any method): 501 ``Method 'X /path' not implemented``."""
    return re_path(rf"^{FORMATS}(?:/(?P<path>.*))?$", not_implemented, name="api-not-implemented")


def api_urlpatterns(routes: Iterable[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    """The routes plus the 501 catch-all, which must come last."""
    return [*routes, catch_all()]
