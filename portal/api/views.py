"""Base view of every /api2/json endpoint."""

from __future__ import annotations

from typing import Any

from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.parsers import PVEFormParser
from portal.api.renderers import Envelope, PVEJSONRenderer


class PVEContentNegotiation(DefaultContentNegotiation):
    """Always JSON out; a body without Content-Type is read as a form."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        if not request.content_type:
            return next((p for p in parsers if isinstance(p, PVEFormParser)), None)
        return super().select_parser(request, parsers)

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        renderer = renderers[0]
        return renderer, renderer.media_type


class PVEAPIView(APIView):
    """Thin endpoint base: authentication from settings, JSON envelope, Proxmox errors.

    ``public = True`` endpoints still authenticate when credentials are sent but allow anonymous
    callers (login, realm list).
    """

    public = False
    content_negotiation_class = PVEContentNegotiation
    renderer_classes = [PVEJSONRenderer]

    def perform_authentication(self, request: Request) -> None:
        if not self.public:
            return super().perform_authentication(request)
        try:
            request.user  # noqa: B018  (evaluates the authenticators)
        except exceptions.AuthenticationFailed:
            request._not_authenticated()
        return None

    def get_permissions(self) -> list[Any]:
        return [AllowAny()] if self.public else [IsAuthenticated()]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return csrf_exempt(super().as_view(**initkwargs))

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Type"] = "application/json;charset=UTF-8"
        return response


def ok(data: Any, **extra: Any) -> Response:
    """200 with ``{"data": data}`` plus extra top-level keys (``total``)."""
    return Response(Envelope(data=data, **extra) if extra else data)
