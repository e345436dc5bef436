"""ASGI entry point: Django (admin, portal, /api2/json) over HTTPS, websockets via Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from portal.origin import SameOriginValidator  # noqa: E402

# Static files (admin CSS/JS) are served by the app itself: a node needs no separate web server.
application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_application),
        "websocket": SameOriginValidator(URLRouter([])),  # same origin, allowed host
    }
)
