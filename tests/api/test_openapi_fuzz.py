"""schemathesis over the served OpenAPI description, against the node's real HTTPS server.

Each declared method gets a bounded number of generated requests (valid ones, then ones that
break its parameters), sent with an API token of root@pam: no answer may be a 5xx, every answer
must have a status the description lists and a body in its declared shape. Pools the fuzzer
creates are removed afterwards. Undeclared methods are not fuzzed: the description claims
nothing about their parameters (``x-declared: false``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from authz import services
from authz.models import APIToken, Pool, User
from tests.webserver import WebServer, serving

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"
EXAMPLES = 30  # per method and generation mode: bounded, so the module takes about a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with serving(node_env, tmp_path_factory.mktemp("web")) as server:
        yield server


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    root = User.objects.get(userid="root@pam")
    if APIToken.objects.filter(tokenid="root@pam!fuzz").exists():
        services.delete_token("root@pam!fuzz", actor=root)
    _row, secret = services.add_token("root@pam", "fuzz", actor=root, privsep=False)
    pools = set(Pool.objects.values_list("poolid", flat=True))
    yield f"PVEAPIToken=root@pam!fuzz={secret}"
    services.delete_token("root@pam!fuzz", actor=root)
    for pool in Pool.objects.exclude(poolid__in=pools):
        pool.delete()


@pytest.fixture(scope="module")
def schema(web: WebServer) -> schemathesis.BaseSchema:
    served = requests.get(f"{web.base}/api2/json/openapi.json", verify=str(web.ca), timeout=30)
    assert served.status_code == 200
    return schemathesis.openapi.from_dict(served.json())


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of each declared method; negative data only where there are parameters to break."""
    from portal.api.openapi import describe

    cases = []
    for path, item in sorted(describe()["paths"].items()):
        for method, op in sorted(item.items()):
            if op.get("x-declared", True):
                cases.append((method.upper(), path, GenerationMode.POSITIVE))
                if op["parameters"] or "requestBody" in op:
                    cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_the_declared_method_answers_as_described(web, token, schema, method, path, mode):
    operation = schema[path][method]
    session = requests.Session()
    session.verify = str(web.ca)
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), here=st.booleans())
    def run(case: schemathesis.Case, here: bool) -> None:
        if here and "node" in (case.path_parameters or {}):
            case.path_parameters["node"] = NODE  # half the requests reach the handler on this node
        response = case.call(
            base_url=f"{web.base}/api2/json",
            session=session,
            headers={"Authorization": token},
            timeout=30,
            verify=str(web.ca),
        )
        seen.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as failure:
            raise AssertionError(
                f"{method} {path} {case.path_parameters} {case.query} {case.body!r}: "
                f"{response.status_code} {response.text[:500]}"
            ) from failure

    run()
    assert seen, "no request was sent"
    if mode is GenerationMode.POSITIVE and "{upid}" not in path and "{poolid}" not in path:
        assert any(code == 200 for code in seen), f"{method} {path}: no valid request succeeded ({sorted(set(seen))})"
