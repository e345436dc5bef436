"""URL patterns for Proxmox-style paths: ``{placeholder}`` segments, optional trailing slash, 501 fallback."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from django.urls import URLPattern, re_path

from portal.api.errors import not_implemented

PREFIX = "api2/json/"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _decoded(view: Callable[..., Any]) -> Callable[..., Any]:
    """Percent-decode path values (Terraform sends a UPID's '!' as %21)."""

    def wrapper(request: Any, **kwargs: Any) -> Any:
        return view(request, **{key: unquote(value) for key, value in kwargs.items()})

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]
    return wrapper


def api_path(template: str, view: Callable[..., Any], name: str | None = None) -> URLPattern:
    """``nodes/{node}/qemu/{vmid}`` -> a re_path under /api2/json with an optional trailing slash."""
    regex = _PLACEHOLDER.sub(
        lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
    )
    return re_path(rf"^{PREFIX}{regex}/?$", _decoded(view), name=name)


def api_urlpatterns(routes: list[URLPattern]) -> list[URLPattern]:
    """The routes plus the catch-all that answers everything else under /api2/json with 501."""
    return [*routes, re_path(rf"^{PREFIX[:-1]}(?P<path>/.*)?$", not_implemented)]
