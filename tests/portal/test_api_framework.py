"""The shared /api2/json base (portal.api): envelope, errors, parsing, parameters, routing.

Self-contained: this module is its own URLconf (selected with ``override_settings``) with tiny
views, so it runs under the project's settings and under the minimal ones of conftest.py alike.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import re_path
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import params
from portal.api.errors import APIError, ParameterError, reason_phrase, register_error
from portal.api.routing import api_path, api_urlpatterns, template_regex
from portal.api.views import PVEAPIView, PVEResponse, ok
from replicator import client as replicator_client
from replicator.exceptions import ReplicationError

API = "/api2/json"
JSON = "application/json;charset=UTF-8"
UPID = "UPID:pve:0000A1B2:0012C3D4:6650F00D:qmstart:100:root@pam!tok:"


class ConflictError(Exception):
    """A domain exception mapped with register_error."""


class SubConflictError(ConflictError):
    """Mapped through its parent class."""


class StatusError(Exception):
    """Carries its own status, mapped with a status function."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


register_error(ConflictError, 409, lambda exc: f"conflict: {exc}")
register_error(StatusError, lambda exc: exc.status)


class AlwaysFails(BaseAuthentication):
    """An authenticator that rejects every request."""

    def authenticate(self, request: Request) -> None:
        raise exceptions.AuthenticationFailed("bad ticket")

    def authenticate_header(self, request: Request) -> str:
        return "PVEAuthCookie"


class Open(PVEAPIView):
    """Anonymous test view base."""

    authentication_classes: list[Any] = []
    public = True
    proxyto = None  # these views answer for any node name ("pve"), none is forwarded


class ThingView(Open):
    def get(self, request: Request, **kwargs: Any) -> Response:
        mode = request.query_params.get("mode", "")
        if mode == "null":
            return ok(None)
        if mode == "total":
            return ok([1, 2], total=5)
        if mode == "raw":
            return Response({"data": 1})
        if mode == "pve":
            return PVEResponse("x", changes="y")
        return ok({"answer": 42})


class ItemView(Open):
    def get(self, request: Request, item: str) -> Response:
        return ok(params.collect(request, {"item": item}))

    def post(self, request: Request, item: str) -> Response:
        return ok(params.collect(request, {"item": item}))

    def delete(self, request: Request, item: str) -> Response:
        return ok(params.collect(request, {"item": item}))


class MigrateView(Open):
    def post(self, request: Request, node: str, vmid: str) -> Response:
        return ok(params.collect(request, {"node": node, "vmid": vmid}))


class TaskView(Open):
    def get(self, request: Request, node: str, upid: str) -> Response:
        return ok({"node": node, "upid": upid})


class CheckedView(Open):
    def get(self, request: Request) -> Response:
        with params.ParamCollector(params.collect(request, {})) as p:
            count = p.integer("count", minimum=1, maximum=10)
            flag = p.boolean("flag", default=0)
            name = p.string("name", max_length=5, pattern=r"[a-z]+")
            kind = p.enum("kind", ["a", "b"], default="a")
        return ok({"count": count, "flag": flag, "name": name, "kind": kind})


class FailView(Open):
    def get(self, request: Request) -> Response:
        failure = request.query_params.get("what", "")
        if failure == "config":
            raise APIError(500, "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist")
        if failure == "multiline":
            raise APIError(500, "first line\r\nInjected: header")
        if failure == "conflict":
            raise SubConflictError("vm 100 locked")
        if failure == "status":
            raise StatusError(503, "cluster not ready - no quorum?")
        if failure == "store":
            raise ReplicationError("replicator error: unable to open database file /var/lib/pve/cluster.db")
        if failure == "unreachable":  # the real client, asked to reach a replicator that is not there
            with override_settings(PVE_REPLICATOR_SOCKET="/nonexistent/pve-test/replicator.sock"):
                replicator_client._Connection().request({"op": "status"}, timeout=1)
        if failure == "validation":
            raise exceptions.ValidationError({"memory": ["too small"]})
        if failure == "forbidden":
            raise exceptions.PermissionDenied("Permission check failed (/vms/100, VM.Audit)")
        raise RuntimeError("disk exploded")

    def post(self, request: Request) -> Response:
        return ok(dict(request.data))


class PrivateView(PVEAPIView):
    authentication_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return ok("secret")


class PublicFailingAuthView(PVEAPIView):
    authentication_classes = [AlwaysFails]
    public = True

    def post(self, request: Request) -> Response:
        return ok({"anonymous": request.user.is_anonymous, "body": request.data.dict()})


class PrivateFailingAuthView(PrivateView):
    authentication_classes = [AlwaysFails]


def plain_crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("plain view crashed")


urlpatterns = [
    *api_urlpatterns(
        [
            api_path("thing", ThingView.as_view()),
            api_path("items/{item}", ItemView.as_view()),
            api_path("nodes/{node}/qemu/{vmid}/migrate", MigrateView.as_view()),
            api_path("nodes/{node}/tasks/{upid}/status", TaskView.as_view()),
            api_path("checked", CheckedView.as_view()),
            api_path("fail", FailView.as_view()),
            api_path("private", PrivateView.as_view()),
            api_path("public-failing", PublicFailingAuthView.as_view()),
            api_path("private-failing", PrivateFailingAuthView.as_view()),
        ]
    ),
    re_path(r"^api2/crash$", plain_crash),
]
handler404 = "portal.api.errors.handler404"
handler500 = "portal.api.errors.handler500"

pytestmark = pytest.mark.usefixtures("urlconf")


@pytest.fixture
def urlconf() -> Any:
    with override_settings(ROOT_URLCONF=__name__):
        yield


def body(response: HttpResponse) -> Any:
    assert response["Content-Type"] == JSON
    return json.loads(response.content)


def form(client: Client, method: str, path: str, data: str, content_type: str | None) -> HttpResponse:
    extra = {} if content_type is None else {"content_type": content_type}
    return client.generic(method, path, data.encode(), **extra)


# --- envelope ------------------------------------------------------------------------------


def test_success_envelope_and_content_type() -> None:
    response = Client().get(f"{API}/thing")
    assert response.status_code == 200
    assert body(response) == {"data": {"answer": 42}}


def test_null_data_is_still_enveloped() -> None:
    response = Client().get(f"{API}/thing", {"mode": "null"})
    assert response.content == b'{"data":null}'


def test_total_and_extra_keys_pass_through() -> None:
    assert body(Client().get(f"{API}/thing", {"mode": "total"})) == {"data": [1, 2], "total": 5}
    assert body(Client().get(f"{API}/thing", {"mode": "pve"})) == {"data": "x", "changes": "y"}


def test_unmarked_dict_with_data_key_is_wrapped_again() -> None:
    assert body(Client().get(f"{API}/thing", {"mode": "raw"})) == {"data": {"data": 1}}


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        "application/json, application/x-javascript, text/javascript, text/x-javascript, text/x-json",
        "text/html",
        "application/xml;q=0.9",
        "garbage///;;",
    ],
)
def test_any_accept_header_gets_json(accept: str) -> None:
    response = Client().get(f"{API}/thing", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert body(response) == {"data": {"answer": 42}}


def test_format_query_parameter_does_not_select_browsable_api() -> None:
    assert body(Client().get(f"{API}/thing", {"format": "api"}))["data"] == {"answer": 42}


# --- errors --------------------------------------------------------------------------------


def test_error_body_and_reason_phrase() -> None:
    response = Client().get(f"{API}/fail", {"what": "config"})
    message = "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"
    assert response.status_code == 500
    assert response.reason_phrase == message
    assert body(response) == {"data": None, "message": message + "\n"}


def test_reason_phrase_with_newline_is_sanitised() -> None:
    response = Client().get(f"{API}/fail", {"what": "multiline"})
    assert response.status_code == 500
    assert response.reason_phrase == "first line"
    assert body(response)["message"] == "first line\r\nInjected: header\n"


def test_reason_phrase_helper() -> None:
    assert reason_phrase("naïve\x00ok") == "na?ve?ok"
    assert reason_phrase("\n\nsecond\nthird") == "second"
    assert reason_phrase("", 404) == "Not Found"
    assert reason_phrase("x" * 1000) == "x" * 256
    assert reason_phrase("a\u2028b") == "a"


def test_registered_domain_exceptions() -> None:
    response = Client().get(f"{API}/fail", {"what": "conflict"})
    assert (response.status_code, response.reason_phrase) == (409, "conflict: vm 100 locked")
    response = Client().get(f"{API}/fail", {"what": "status"})
    assert (response.status_code, body(response)["message"]) == (503, "cluster not ready - no quorum?\n")


def test_unknown_exception_is_500_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    """A 500 names no exception text and no path; the node's log has them."""
    response = Client().get(f"{API}/fail")
    assert response.status_code == 500
    assert body(response) == {"data": None, "message": "internal server error\n"}
    assert b"Traceback" not in response.content and b"disk exploded" not in response.content
    assert "disk exploded" in caplog.text and "Traceback" in caplog.text
    response = Client().get(f"{API}/fail", {"what": "store"})  # an unexpected error inside the replicator
    assert (response.status_code, body(response)["message"]) == (500, "internal server error\n")
    assert b"/var/lib" not in response.content and "/var/lib/pve/cluster.db" in caplog.text
    response = Client().get(f"{API}/fail", {"what": "unreachable"})  # 503, the socket path only in the log
    assert (response.status_code, body(response)["message"]) == (503, "this node's replicator is not reachable\n")
    assert b"/nonexistent" not in response.content and "/nonexistent/pve-test/replicator.sock" in caplog.text


def test_drf_validation_and_permission_errors() -> None:
    response = Client().get(f"{API}/fail", {"what": "validation"})
    assert response.status_code == 400
    assert body(response)["errors"] == {"memory": "too small"}
    response = Client().get(f"{API}/fail", {"what": "forbidden"})
    assert (response.status_code, response.reason_phrase) == (403, "Permission check failed (/vms/100, VM.Audit)")


def test_authentication_errors_are_401() -> None:
    response = Client().get(f"{API}/private")
    assert (response.status_code, response.reason_phrase) == (401, "No ticket")
    response = Client().get(f"{API}/private-failing")
    assert (response.status_code, body(response)["message"]) == (401, "bad ticket\n")


def test_public_view_runs_authentication_but_allows_anonymous() -> None:
    response = Client().post(f"{API}/public-failing", "a=1", content_type="application/x-www-form-urlencoded")
    assert body(response) == {"data": {"anonymous": True, "body": {"a": "1"}}}


def test_malformed_json_body_is_a_400_json_error() -> None:
    response = Client().post(f"{API}/fail", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert body(response)["data"] is None


# --- 501 and routing -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_unknown_path_is_501(method: str) -> None:
    response = Client(enforce_csrf_checks=True).generic(method, f"{API}/foo/bar/")
    assert response.status_code == 501
    assert response.reason_phrase == f"Method '{method} /foo/bar' not implemented"
    assert body(response) == {"data": None, "message": f"Method '{method} /foo/bar' not implemented\n"}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS"])
def test_unknown_method_on_known_path_is_501(method: str) -> None:
    response = Client().generic(method, f"{API}/thing/")
    assert response.status_code == 501
    assert body(response)["message"] == f"Method '{method} /thing' not implemented\n"


def test_trailing_slash_accepted_and_never_redirected() -> None:
    for path in (f"{API}/thing", f"{API}/thing/"):
        response = Client().get(path)
        assert response.status_code == 200, path
    response = Client().delete(f"{API}/items/100/?purge=0&destroy-unreferenced-disks=0")
    assert response.status_code == 200
    assert body(response)["data"] == {"item": "100", "purge": "0", "destroy-unreferenced-disks": "0"}


def test_percent_encoded_upid_segment_is_decoded() -> None:
    escaped = UPID.replace("!", "%21").replace(":", "%3A").replace("@", "%40")
    for path in (f"{API}/nodes/pve/tasks/{UPID}/status", f"{API}/nodes/pve/tasks/{escaped}/status/"):
        assert body(Client().get(path))["data"] == {"node": "pve", "upid": UPID}


def test_template_regex() -> None:
    assert template_regex("nodes/{node}/qemu") == "nodes/(?P<node>[^/]+)/qemu"
    with pytest.raises(ValueError):
        template_regex("nodes/{node")


def test_django_404_and_500_handlers_answer_json_under_api2() -> None:
    response = Client().get("/api2/html/version")  # a format not served here
    assert response.status_code == 501
    assert body(response)["data"] is None
    response = Client(raise_request_exception=False).get("/api2/crash")
    assert response.status_code == 500
    assert b"plain view crashed" not in response.content
    assert body(response) == {"data": None, "message": "internal server error\n"}


# --- bodies and parameters -----------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "", None])
def test_form_body_with_and_without_content_type(content_type: str | None) -> None:
    response = form(Client(), "POST", f"{API}/items/7?extra=q", "name=a+b&c=%21&a=1&a=2", content_type)
    assert body(response)["data"] == {"item": "7", "name": "a b", "c": "!", "a": ["1", "2"], "extra": "q"}


def test_body_without_content_type_header_at_all() -> None:
    request = RequestFactory().generic("POST", f"{API}/items/7", b"name=x", content_type="")
    del request.META["CONTENT_TYPE"]
    response = ItemView.as_view()(request, item="7")
    response.render()
    assert json.loads(response.content) == {"data": {"item": "7", "name": "x"}}


def test_empty_post_without_content_type() -> None:
    response = Client().generic("POST", f"{API}/items/7")
    assert body(response)["data"] == {"item": "7"}


def test_json_body() -> None:
    response = Client().post(f"{API}/items/7", {"vmid": 100, "on": True}, content_type="application/json")
    assert body(response)["data"] == {"item": "7", "vmid": 100, "on": True}


def test_json_body_must_be_an_object() -> None:
    response = Client().post(f"{API}/items/7", [1, 2], content_type="application/json")
    assert response.status_code == 400


def test_path_parameter_conflicts() -> None:
    client = Client()
    ok_response = client.post(f"{API}/nodes/pve/qemu/100/migrate", {"vmid": "100", "node": "pve", "target": "b"})
    assert body(ok_response)["data"] == {"node": "pve", "vmid": "100", "target": "b"}
    response = client.post(f"{API}/nodes/pve/qemu/100/migrate", {"vmid": "101", "node": "other"})
    assert (response.status_code, response.reason_phrase) == (400, "Parameter verification failed.")
    conflict = "duplicate parameter (already defined in URI) with conflicting values!"
    assert body(response) == {
        "data": None,
        "message": "Parameter verification failed.\n",
        "errors": {"vmid": conflict, "node": conflict},
    }
    response = client.get(f"{API}/items/7", {"item": "8"})
    assert body(response)["errors"] == {"item": conflict}
    assert body(client.get(f"{API}/items/7", {"item": "7"}))["data"] == {"item": "7"}


def test_json_path_parameter_equal_as_number() -> None:
    response = Client().post(f"{API}/nodes/pve/qemu/100/migrate", {"vmid": 100}, content_type="application/json")
    assert body(response)["data"]["vmid"] == "100"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_with_body_are_501(method: str) -> None:
    response = form(Client(), method, f"{API}/items/7", "a=1", "application/x-www-form-urlencoded")
    assert response.status_code == 501
    assert response.reason_phrase == f"Unexpected content for method '{method}'"


def test_dc_is_ignored() -> None:
    assert body(Client().get(f"{API}/items/7", {"_dc": "123"}))["data"] == {"item": "7"}


def test_collected_parameter_errors() -> None:
    response = Client().get(f"{API}/checked", {"count": "1.5", "flag": "True", "name": "ABCDEFG", "kind": "c"})
    assert response.status_code == 400
    assert body(response)["errors"] == {
        "count": "type check ('integer') failed - got '1.5'",
        "flag": "type check ('boolean') failed - got 'True'",
        "name": "value does not match the regex pattern",
        "kind": "value 'c' does not have a value in the enumeration 'a, b'",
    }
    response = Client().get(f"{API}/checked", {"count": "3", "flag": "1", "name": "abc"})
    assert body(response)["data"] == {"count": 3, "flag": 1, "name": "abc", "kind": "a"}
    response = Client().get(f"{API}/checked")
    assert body(response)["errors"] == {
        "count": "property is missing and it is not optional",
        "name": "property is missing and it is not optional",
    }


@pytest.mark.parametrize("value", ["1.5", "True", "", " 1", "1 ", "1\n", "0x10", "\u0661", True, 1.0, None, ["1"]])
def test_integer_rejects(value: Any) -> None:
    with pytest.raises(ParameterError) as info:
        params.integer(value, "n")
    assert info.value.status == 400
    assert list(info.value.errors or {}) == ["n"]


def test_integer_accepts_and_bounds() -> None:
    assert params.integer("100", "n") == 100
    assert params.integer("-5", "n") == -5
    assert params.integer(7, "n", minimum=1, maximum=7) == 7
    with pytest.raises(ParameterError, match="Parameter verification failed") as info:
        params.integer("0", "n", minimum=1)
    assert info.value.errors == {"n": "value must have a minimum value of 1"}
    with pytest.raises(ParameterError) as info:
        params.integer(11, "n", maximum=10)
    assert info.value.errors == {"n": "value must have a maximum value of 10"}


def test_boolean() -> None:
    assert [params.boolean(v, "b") for v in ("1", "0", 1, 0, True, False)] == [1, 0, 1, 0, 1, 0]
    for value in ("True", "false", "yes", "on", 2, "", "01"):
        with pytest.raises(ParameterError) as info:
            params.boolean(value, "b")
        assert info.value.errors == {"b": f"type check ('boolean') failed - got '{value}'"}


def test_string_and_enum() -> None:
    assert params.string("abc", "s", max_length=3) == "abc"
    assert params.string(None, "s", optional=True) == ""
    with pytest.raises(ParameterError) as info:
        params.string("abcd", "s", max_length=3)
    assert info.value.errors == {"s": "value may only be 3 characters long"}
    with pytest.raises(ParameterError):
        params.string("ab\n", "s", pattern=r"[a-z]+")
    assert params.enum("b", "e", ["a", "b"]) == "b"
