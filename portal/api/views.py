"""Base view of every /api2/json endpoint: Proxmox's envelope, parsing, errors and auth rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api import forwarding
from portal.api.errors import api_relative_path, exception_handler
from portal.api.params import check_no_body
from portal.api.parsers import PVEFormParser
from portal.api.renderers import CONTENT_TYPE, Envelope, PVEJSONRenderer

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission  # a Protocol of the stubs only


class PVEContentNegotiation(BaseContentNegotiation):
    """Always JSON out (never 406); a body without (or with an unknown) Content-Type is read as a form."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        """The matching parser; the form parser when the Content-Type is absent or unknown."""
        if request.content_type:
            parser = DefaultContentNegotiation().select_parser(request, parsers)
            if parser is not None:
                return parser
        return next((p for p in parsers if isinstance(p, PVEFormParser)), PVEFormParser())

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        """The JSON renderer, whatever Accept and ``?format=`` say."""
        renderer = next((r for r in renderers if isinstance(r, PVEJSONRenderer)), None) or PVEJSONRenderer()
        return renderer, CONTENT_TYPE


class PVEResponse(Response):
    """200 with the envelope ``{"data": data, **extra}`` (``total``, ``changes`` at top level)."""

    def __init__(self, data: Any = None, status: int = 200, **extra: Any) -> None:
        super().__init__(Envelope(data, **extra), status=status)


def ok(data: Any = None, **extra: Any) -> Response:
    """200 with ``{"data": data}`` plus extra top-level keys (``ok(lines, total=n)``)."""
    return PVEResponse(data, **extra)


class PVEAPIView(APIView):
    """Endpoint base: JSON envelope, form/JSON/multipart bodies, Proxmox errors, no pagination.

    Authentication comes from settings (``DEFAULT_AUTHENTICATION_CLASSES``). A ``/nodes/<node>/...``
    path naming another node (``proxyto``: the URL parameter holding the node) is forwarded to
    that node once the caller is authenticated. ``public = True``
    endpoints (login, realm list) still run it, but a failed one leaves the caller anonymous and
    any caller is allowed. Unknown methods on a known path are 501, as in Proxmox. CSRF is the
    authentication class's business (``CSRFPreventionToken``), so Django's check is off.
    """

    public: bool = False
    # The URL parameter naming the node that must answer (Proxmox's ``proxyto``); None: answer here.
    proxyto: str | None = "node"
    content_negotiation_class = PVEContentNegotiation
    renderer_classes = [PVEJSONRenderer]
    parser_classes = [PVEFormParser, JSONParser, MultiPartParser]
    permission_classes = [IsAuthenticated]
    pagination_class = None
    http_method_names = ["get", "post", "put", "delete", "head"]

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        """AllowAny for public endpoints, else ``permission_classes``."""
        if self.public:
            return [AllowAny()]
        return super().get_permissions()

    def perform_authentication(self, request: Request) -> None:
        """Authenticate now; on a public endpoint bad credentials mean anonymous, not 401."""
        try:
            request.user  # noqa: B018  (runs the authenticators)
        except exceptions.APIException:
            if not self.public:
                raise
            # DRF has already made the request anonymous before re-raising.

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> NoReturn:
        """An anonymous caller gets 401 (as in Proxmox), even when no authenticator is configured."""
        if not request.successful_authenticator:
            raise exceptions.NotAuthenticated()
        super().permission_denied(request, message=message, code=code)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Proxmox's 501 for a GET/DELETE with content comes before authentication; forwarding after it."""
        check_no_body(request)
        super().initial(request, *args, **kwargs)
        if self.proxyto and self.proxyto in kwargs and api_relative_path(request.path).startswith("/nodes/"):
            target = forwarding.target_for(request, str(kwargs[self.proxyto]))
            if target is not None:
                raise forwarding.Forward(target)

    def handle_exception(self, exc: Exception) -> Any:
        """A request for another node is answered by that node (see ``portal.api.forwarding``)."""
        if isinstance(exc, forwarding.Forward):
            return forwarding.relay(self.request, exc.target)
        return super().handle_exception(exc)

    def get_exception_handler(self) -> Any:
        """This package's handler, whatever settings say."""
        return exception_handler

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        """DRF's finalisation, then Proxmox's exact Content-Type (also on non-DRF responses)."""
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response):
            response["Content-Type"] = CONTENT_TYPE
        return response
