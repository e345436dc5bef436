"""Talking to the cluster node during a join: over SSH (``pvecm add``) or its HTTPS API (``POST /cluster/config/join``).

Both paths check the peer before changing anything: the SSH host key (known fingerprint or the
operator's confirmation), the TLS certificate fingerprint (``--fingerprint``), the join API
version and VMID conflicts. Only then does the cluster add the node.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from django.conf import settings

from cluster.keys import ssh, ssh_keys
from cluster.membership import join
from cluster.membership.bootstrap import local_address
from cluster.membership.nodelist import JOIN_API_VERSION

REPO = Path(__file__).resolve().parents[2]
ENV_FILE = "/etc/default/pve-django"


def remote_manage(args: list[str]) -> list[str]:
    """argv for ``manage.py ARGS`` on another node: the same install path, its own environment file."""
    script = f'if [ -r {ENV_FILE} ]; then set -a; . {ENV_FILE}; set +a; fi; exec "$@"'
    return ["sh", "-c", script, "sh", sys.executable, str(REPO / "manage.py"), *args]


def normalise_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().upper()


def _check_info(info: dict[str, Any], fingerprint: str | None, progress: join.Progress) -> None:
    if int(info.get("apiversion", 0)) != JOIN_API_VERSION:
        raise join.JoinError(f"unsupported join API version {info.get('apiversion')} of the cluster node")
    if fingerprint is not None and normalise_fingerprint(fingerprint) != normalise_fingerprint(info["fingerprint"]):
        raise join.JoinError(
            f"certificate fingerprint of the cluster node is {info['fingerprint']}, not the given {fingerprint}"
        )
    names = ", ".join(n["name"] for n in info.get("nodelist", []))
    progress(f"cluster {info['cluster_name']} (nodes: {names}), certificate fingerprint {info['fingerprint']}")
    if any(n["name"] == settings.PVE_NODE_NAME for n in info.get("nodelist", [])):
        progress(f"node {settings.PVE_NODE_NAME} is listed already: continuing an earlier join")


def join_over_ssh(
    host: str,
    *,
    password: str | None = None,
    ssh_fingerprint: str | None = None,
    fingerprint: str | None = None,
    confirm: ssh.Confirm | None = None,
    nodeid: int | None = None,
    votes: int = 1,
    force: bool = False,
    port: int | None = None,
    progress: join.Progress = print,
) -> None:
    """``pvecm add HOST``: the legacy SSH join of Proxmox, with paramiko and verified host keys."""
    if join.resume_if_pending(progress):
        return
    join.assert_joinable(force=force)
    ssh_keys.ensure_root_key()
    progress(f"connecting to {host} over SSH")
    known_hosts = Path(settings.PVE_SSH_DIR) / "known_hosts"
    with ssh.connect(
        host,
        port=port or settings.PVE_SSH_PORT,
        password=password,
        key_file=ssh_keys.root_key_path(),
        known_hosts=known_hosts,
        expected_fingerprint=ssh_fingerprint,
        confirm=confirm,
    ) as conn:
        progress(f"SSH host key of {host}: {ssh_keys.fingerprint(conn.host_key)}")
        ssh.remember_host_key(known_hosts, host, conn.host_key)
        vms = join.local_vms()
        args = ["pvecm", "addnode", settings.PVE_NODE_NAME, "--new_node_ip", local_address(), "--votes", str(votes)]
        if nodeid is not None:
            args += ["--nodeid", str(nodeid)]
        if vms:
            args += ["--vmids", ",".join(str(vm["vmid"]) for vm in vms)]
        if force:
            args.append("--force")
        # One remote process: it prints the join information, waits for our go, then adds us.
        dialogue = conn.dialogue(remote_manage([*args, "--confirm-on-stdin"]))
        first = dialogue.readline()
        try:
            info = json.loads(first)
        except ValueError:
            result = dialogue.finish()
            message = (result.stderr.strip() or first.strip() or "no output").splitlines()[-1]
            raise join.JoinError(f"'pvecm addnode' on {host} failed: {message}") from None
        try:
            _check_info(info, fingerprint, progress)
        except join.JoinError:
            dialogue.send("abort")
            dialogue.finish()
            raise
        progress(f"asking {host} to add node {settings.PVE_NODE_NAME} ({local_address()})")
        dialogue.send("add")
        result = dialogue.finish()
        if result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
            raise join.JoinError(f"'pvecm addnode' on {host} failed: {message}")
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            raise join.JoinError(f"'pvecm addnode' on {host} gave no JSON answer: {result.stdout[:200]!r}") from None
    for warning in answer.get("warnings", []):
        progress(f"WARNING: {warning}")
    join.crash_point("after_addnode")
    join.finish_join(answer, vms, progress)
    progress("successfully added node to cluster")


# --- over the API ------------------------------------------------------------------------


class PinnedHTTPS:
    """HTTPS to a node whose certificate is pinned by SHA-256 fingerprint (no CA needed, as Proxmox's join)."""

    def __init__(self, host: str, fingerprint: str, port: int = 8006, timeout: float = 30) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.fingerprint = normalise_fingerprint(fingerprint)
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # verified below, by fingerprint, before anything is sent
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=context)
        try:
            conn.connect()
            der = conn.sock.getpeercert(binary_form=True) if conn.sock is not None else None
            seen = hashlib.sha256(der or b"").hexdigest().upper()
            if seen != self.fingerprint:
                raise join.JoinError(
                    f"certificate fingerprint of {self.host} is {':'.join(seen[i : i + 2] for i in range(0, 64, 2))}, "
                    "not the one given; refusing to send the password"
                )
            body = urllib.parse.urlencode(params or {}, doseq=True)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if self.cookie:
                headers["Cookie"] = f"PVEAuthCookie={urllib.parse.quote(self.cookie, safe='')}"
            if self.csrf:
                headers["CSRFPreventionToken"] = self.csrf
            conn.request(method, f"/api2/json{path}", body=body if method != "GET" else None, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        except OSError as exc:
            raise join.JoinError(f"cannot reach https://{self.host}:{self.port}: {exc}") from None
        finally:
            conn.close()
        if response.status != 200:
            try:
                detail = json.loads(text)
            except ValueError:
                detail = {}
            errors = detail.get("errors") if isinstance(detail, dict) else None
            raise join.JoinError(
                f"{method} {path} on {self.host}: {response.status} {response.reason} {errors or ''}".strip()
            )
        return json.loads(text).get("data")

    def login(self, username: str, password: str) -> None:
        data = self.request("POST", "/access/ticket", {"username": username, "password": password})
        self.cookie, self.csrf = data["ticket"], data["CSRFPreventionToken"]


def join_over_api(
    host: str,
    *,
    password: str,
    fingerprint: str,
    nodeid: int | None = None,
    votes: int = 1,
    force: bool = False,
    progress: join.Progress = print,
) -> None:
    """``POST /cluster/config/join``: log in to the cluster node as root@pam over pinned TLS, ask it to add us."""
    if join.resume_if_pending(progress):
        return
    join.assert_joinable(force=force)
    peer = PinnedHTTPS(host, fingerprint)
    progress(f"logging in to https://{host}:8006 as root@pam")
    peer.login("root@pam", password)
    info = peer.request("GET", "/cluster/config/join")
    _check_info(info, fingerprint, progress)
    vms = join.local_vms()
    params: dict[str, Any] = {"new_node_ip": local_address(), "votes": votes, "apiversion": JOIN_API_VERSION}
    if nodeid is not None:
        params["nodeid"] = nodeid
    if vms:
        params["vmids"] = ",".join(str(vm["vmid"]) for vm in vms)
    if force:
        params["force"] = 1
    progress(f"asking {host} to add node {settings.PVE_NODE_NAME} ({local_address()})")
    answer = peer.request("POST", f"/cluster/config/nodes/{settings.PVE_NODE_NAME}", params)
    for warning in answer.get("warnings", []):
        progress(f"WARNING: {warning}")
    join.crash_point("after_addnode")
    join.finish_join(answer, vms, progress)
    progress("successfully added node to cluster")
