"""The web server's own protections, on the real server: Host check, HSTS, secure cookies, POST-only
logout, the websocket Origin check; the cluster log on the admin index; 500 answers say nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings
from django.urls import re_path

from authz import services
from authz.models import ACLEntry, Pool, User
from cluster import services as cluster_services
from portal.api.views import PVEAPIView
from tests.webserver import WebServer, serving

pytestmark = [pytest.mark.usefixtures("replicator")]
ROOT_PASSWORD = "test-root-password"


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with serving(node_env, tmp_path_factory.mktemp("web")) as server:
        yield server


def admin_session(web: WebServer) -> tuple[str, str]:
    """Log in to the admin over the real server: the cookies to send, and the CSRF token."""
    _status, headers, page = web.request("GET", "/admin/login/")
    csrf = headers.cookies()["csrftoken"].value
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    status, headers, _ = web.request(
        "POST",
        "/admin/login/",
        {"csrfmiddlewaretoken": token, "username": "root@pam", "password": ROOT_PASSWORD, "next": "/admin/"},
        headers={"Cookie": f"csrftoken={csrf}", "Referer": f"{web.base}/admin/login/"},
    )
    assert status == 302, web.log_tail()
    return f"PVEAuthCookie={headers.cookies()['PVEAuthCookie'].value}; csrftoken={csrf}", csrf


def test_only_the_nodes_own_names_are_served(web):
    for host in ("evil.example", "evil.example:8006", "127.0.0.1.evil.example"):
        for path in ("/admin/login/", "/api2/json/version"):
            status, _headers, _body = web.request("GET", path, headers={"Host": host})
            assert status == 400, (host, path)
    for host in (f"127.0.0.1:{web.port}", f"testnode:{web.port}", "localhost", "testnode"):
        assert web.request("GET", "/admin/login/", headers={"Host": host})[0] == 200, host


def test_hsts_and_secure_cookies(web):
    status, headers, _body = web.request("GET", "/admin/login/")
    assert status == 200 and headers.get("Strict-Transport-Security") == "max-age=31536000"
    assert headers.cookies()["csrftoken"]["secure"]
    cookie, csrf = admin_session(web)
    # An admin change leaves its message in the messages cookie: Secure, HttpOnly, SameSite=Lax.
    Pool.objects.filter(poolid="websec").delete()
    status, headers, _body = web.request(
        "POST",
        "/admin/authz/pool/add/",
        {"csrfmiddlewaretoken": csrf, "poolid": "websec", "comment": ""},
        headers={"Cookie": cookie, "Referer": f"{web.base}/admin/authz/pool/add/"},
    )
    assert status == 302 and Pool.objects.filter(poolid="websec").exists(), web.log_tail()
    messages = headers.cookies()["messages"]
    assert messages["secure"] and messages["httponly"] and messages["samesite"] == "Lax"


def test_logout_is_post_only(web):
    cookie, csrf = admin_session(web)
    status, headers, _body = web.request("GET", "/admin/logout/", headers={"Cookie": cookie})
    assert status == 405 and "PVEAuthCookie" not in headers.cookies()
    status, _headers, _body = web.request("GET", "/admin/", headers={"Cookie": cookie})
    assert status == 200  # still logged in
    status, headers, _body = web.request(
        "POST",
        "/admin/logout/",
        {"csrfmiddlewaretoken": csrf},
        headers={"Cookie": cookie, "Referer": f"{web.base}/admin/"},
    )
    assert status == 302 and headers.cookies()["PVEAuthCookie"].value == ""
    assert headers.cookies()["PVEAuthCookie"]["max-age"] == "0"


def _handshake(web: WebServer, origin: str | None, host: str | None = None) -> int:
    """The HTTP status the real server answers a websocket handshake with (101 when accepted);
    ``Host`` may name anything: the connection goes to the server whatever it says."""
    headers = {
        "Host": host or f"127.0.0.1:{web.port}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **({"Origin": origin} if origin is not None else {}),
    }
    return web.request("GET", "/ws/anything", headers=headers, timeout=30)[0]


def test_a_cross_site_page_cannot_open_a_websocket(web):
    for origin in ("https://evil.example", f"https://evil.example:{web.port}", "null", None):
        assert _handshake(web, origin) == 403, origin
    # Same host, another port or scheme: another origin.
    assert _handshake(web, "https://127.0.0.1:8443") == 403
    assert _handshake(web, f"http://127.0.0.1:{web.port}") == 403
    # DNS rebinding: the origin matches the Host, but the Host is not one of the node's names.
    assert _handshake(web, f"https://evil.example:{web.port}", host=f"evil.example:{web.port}") == 403
    # The node's own page gets past the check (to the router, which has no such route: 500).
    assert _handshake(web, f"https://127.0.0.1:{web.port}") == 500
    assert _handshake(web, f"https://testnode:{web.port}", host=f"testnode:{web.port}") == 500


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A websocket application that accepts and echoes one message."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": message["text"]})


def handshake(origin: str, host: str) -> bool:
    """Drive ``SameOriginValidator(echo)`` as the server would; True if it accepted and echoed."""
    from portal.origin import SameOriginValidator

    async def run() -> bool:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        scope = {
            "type": "websocket",
            "scheme": "wss",
            "path": "/ws/x",
            "headers": [(b"host", host.encode()), (b"origin", origin.encode())],
        }
        app = asyncio.create_task(SameOriginValidator(echo)(scope, inbox.get, outbox.put))
        await inbox.put({"type": "websocket.connect"})
        first = await asyncio.wait_for(outbox.get(), 5)
        if first["type"] == "websocket.close":
            await asyncio.wait_for(app, 5)
            return False
        await inbox.put({"type": "websocket.receive", "text": "ping"})
        assert (await asyncio.wait_for(outbox.get(), 5))["text"] == "ping"
        await asyncio.wait_for(app, 5)
        return True

    return async_to_sync(run)()


def test_the_websocket_guard_lets_the_nodes_own_pages_in():
    assert handshake("https://127.0.0.1:8006", "127.0.0.1:8006")
    assert handshake("https://testnode", "testnode:443")
    assert handshake("https://TestNode:8006", "testnode:8006")
    assert not handshake("https://evil.example:8006", "127.0.0.1:8006")
    assert not handshake("https://evil.example:8006", "evil.example:8006")  # not one of the node's names
    assert not handshake("http://127.0.0.1:8006", "127.0.0.1:8006")  # the socket was opened over TLS


def test_the_admin_index_shows_the_cluster_log_only_with_sys_syslog():
    root = User.objects.get(userid="root@pam")
    for userid in ("logreader@pve", "nolog@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password="pw-" + userid)
    ACLEntry.objects.filter(ugid__in=["logreader@pve", "nolog@pve"]).delete()
    services.modify_acl(root, "/", ["PVESysAdmin"], users=["logreader@pve"])
    services.modify_acl(root, "/", ["PVEAuditor"], users=["nolog@pve"])
    cluster_services.log_cluster_message("root's secret change", user="root@pam")
    cluster_services.log_cluster_message("nolog's own change", user="nolog@pve")

    def index(userid: str) -> bytes:
        client = Client()
        login = client.post("/admin/login/", {"username": userid, "password": "pw-" + userid, "next": "/admin/"})
        assert login.status_code == 302
        page = client.get("/admin/")
        assert page.status_code == 200
        return page.content

    assert b"root&#x27;s secret change" in index("logreader@pve")
    page = index("nolog@pve")
    assert b"root&#x27;s secret change" not in page and b"nolog&#x27;s own change" in page


def crash(request: Any) -> Any:
    raise RuntimeError("crashed reading /etc/pve/priv/authkey.key")


class CrashingAPIView(PVEAPIView):
    public = True

    def get(self, request: Any, **kwargs: Any) -> Any:
        raise OSError(2, "No such file or directory", "/var/lib/pve-django/cluster.db")


urlpatterns = [re_path(r"^api2/json/crash$", crash), re_path(r"^api2/json/crash-api$", CrashingAPIView.as_view())]
handler500 = "portal.api.errors.handler500"


def test_500_answers_over_asgi_carry_no_exception_text(caplog):
    client = AsyncClient(raise_request_exception=False)
    with override_settings(ROOT_URLCONF=__name__):
        plain = async_to_sync(client.get)("/api2/json/crash")
        api = async_to_sync(client.get)("/api2/json/crash-api")
    for response in (plain, api):
        assert response.status_code == 500
        assert json.loads(response.content) == {"data": None, "message": "internal server error\n"}
        assert b"authkey" not in response.content and b"/var/lib" not in response.content
    assert "authkey" in caplog.text and "/var/lib/pve-django/cluster.db" in caplog.text  # logged instead


def test_secrets_in_a_query_string_never_reach_the_access_log(node_env, tmp_path):
    """A client may log in with the password in the query string (the API reads it there): the access log hides it."""
    server = WebServer({**node_env, "PVE_LOG_LEVEL": "INFO"}, tmp_path / "web.log")
    server.start()
    try:
        query = urlencode({"username": "root@pam", "password": ROOT_PASSWORD, "realm": "pam"})
        status, _headers, body = server.request("POST", f"/api2/json/access/ticket?{query}")
        assert status == 200, body[:200]
        ticket = json.loads(body)["data"]["ticket"]
        server.request("GET", f"/api2/json/version?{urlencode({'PVEAuthCookie': ticket, 'x': 'shown'})}")
        server.request("GET", "/api2/json/version?%zz=1&password")  # unparsable: dropped whole
        deadline = time.monotonic() + 30
        while "x=shown" not in server.log_path.read_text(errors="replace"):  # the last line is written
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert "/api2/json/access/ticket?username=root@pam&password=(hidden)&realm=pam" in log, log[-2000:]
    assert "PVEAuthCookie=(hidden)&x=shown" in log and "?(query not shown)" in log, log[-2000:]
    assert ROOT_PASSWORD not in log and urlencode({"t": ticket})[2:] not in log
