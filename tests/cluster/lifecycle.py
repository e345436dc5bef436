"""Helpers for the cluster lifecycle tests: commands and API calls run inside a lab node's namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster.lab.cluster import LabCluster, LabNode

REPO = Path(__file__).resolve().parent.parent.parent
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

API_SCRIPT = r"""
import json, ssl, sys, urllib.parse, urllib.request
method, url, ca, body, ticket, csrf = sys.argv[1:7]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
request = urllib.request.Request(url, method=method, data=body.encode() if method != "GET" else None)
if ticket:
    request.add_header("Cookie", "PVEAuthCookie=" + urllib.parse.quote(ticket, safe=""))
    request.add_header("CSRFPreventionToken", csrf)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
try:
    with opener.open(request, timeout=60) as response:
        print(json.dumps({"status": response.status, "body": json.loads(response.read() or b"{}")}))
except urllib.error.HTTPError as exc:
    text = exc.read()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = {"raw": text.decode(errors="replace")}
    print(json.dumps({"status": exc.code, "body": parsed}))
"""


def manage(
    lab: LabCluster,
    node: LabNode,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    """``manage.py ARGS`` inside the node's namespace with the node's settings."""
    process = lab.run(
        node,
        [sys.executable, str(REPO / "manage.py"), *args],
        env={**node.env, "PATH": PATH, **(env or {})},
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(input=input, timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def api(
    lab: LabCluster,
    node: LabNode,
    method: str,
    path: str,
    data: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    """One API call to ``node``'s own web server, from inside its namespace, verified against its CA."""
    ca = node.directory / "etc" / "pve" / "pve-root-ca.pem"
    url = f"https://{node.address}:8006/api2/json{path}"
    body = "&".join(f"{k}={__import__('urllib.parse').parse.quote(str(v), safe='')}" for k, v in (data or {}).items())
    ticket, csrf = auth or ("", "")
    result = lab.run(
        node,
        [sys.executable, "-c", API_SCRIPT, method, url, str(ca), body, ticket, csrf],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = result.communicate(timeout=90)
    if result.returncode != 0:
        raise AssertionError(f"API call failed: {err[-2000:]}")
    answer = json.loads(out)
    return answer["status"], answer["body"]


def web_answers(lab: LabCluster, node: LabNode) -> bool:
    """The node's API answers over TLS (401 without a ticket), asked from inside its namespace."""
    try:
        return api(lab, node, "GET", "/version")[0] == 401
    except AssertionError:  # nothing listens yet
        return False


def login(lab: LabCluster, node: LabNode, password: str) -> tuple[str, str]:
    status, body = api(lab, node, "POST", "/access/ticket", {"username": "root@pam", "password": password})
    assert status == 200, body
    return body["data"]["ticket"], body["data"]["CSRFPreventionToken"]


def host_key_fingerprint(node: LabNode) -> str:
    from cluster.keys.ssh_keys import fingerprint

    return fingerprint((node.directory / "sshd" / "ssh_host_ed25519_key.pub").read_text())


def authorize(on: LabNode, key_of: LabNode) -> None:
    """``ssh-copy-id``: let ``key_of``'s root key log in to ``on``."""
    public = (key_of.directory / "ssh" / "id_ed25519.pub").read_text()
    with open(on.directory / "sshd" / "authorized_keys", "a") as handle:
        handle.write(public)


def tls_fingerprint(node: LabNode) -> str:
    from cluster.keys.certificates import certificate_fingerprint

    return certificate_fingerprint((node.directory / "etc" / "pve" / "nodes" / node.name / "pve-ssl.pem").read_bytes())
