"""The membership verbs of ``manage.py pvecm``: create, add, addnode, delnode, joininfo, updatecerts.

Kept apart from the status verbs (``cluster/management/commands/pvecm.py``) because these work
before a cluster exists. Each prints its steps as it goes; failures are ``CommandError``s with
the reason, and a refused step changes nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from typing import Any

from django.core.management.base import CommandError

from cluster.keys import ssh
from cluster.membership import join, nodelist
from replicator.exceptions import ReplicationError

VERBS = ("create", "add", "addnode", "delnode", "joininfo", "updatecerts")


def add_parsers(sub: Any) -> None:
    create = sub.add_parser("create", help="create a new cluster with this node as its first member")
    create.add_argument("clustername")
    create.add_argument("--nodeid", type=int)
    create.add_argument("--votes", type=int, default=1)
    create.add_argument(
        "--foreground", action="store_true", help="run here instead of as a clustercreate task of this node's worker"
    )
    add = sub.add_parser("add", help="join this node to the cluster of an existing node")
    add.add_argument("hostname", help="address of a cluster node")
    add.add_argument("--fingerprint", help="SHA-256 fingerprint of that node's TLS certificate")
    add.add_argument("--ssh-fingerprint", help="SHA256:... fingerprint of that node's SSH host key")
    add.add_argument("--use_ssh", action="store_true", default=True, help="join over SSH (the default here)")
    add.add_argument("--use-api", action="store_true", help="join over the node's HTTPS API (needs --fingerprint)")
    add.add_argument(
        "--password-file", help="read root's password from this file ('-' for stdin); else prompt, else keys"
    )
    add.add_argument("--nodeid", type=int)
    add.add_argument("--votes", type=int, default=1)
    add.add_argument("--force", action="store_true")
    addnode = sub.add_parser("addnode", help="(cluster side) add a node to the nodelist; prints JSON")
    addnode.add_argument("node")
    addnode.add_argument("--new_node_ip", required=True)
    addnode.add_argument("--nodeid", type=int)
    addnode.add_argument("--votes", type=int, default=1)
    addnode.add_argument("--vmids", default="", help="comma-separated VMIDs the joining node holds")
    addnode.add_argument("--force", action="store_true")
    addnode.add_argument(
        "--confirm-on-stdin", action="store_true", help="print the join information, add only after 'add' on stdin"
    )
    delnode = sub.add_parser("delnode", help="remove a node from the cluster")
    delnode.add_argument("node", help="node name or address")
    delnode.add_argument("--force", action="store_true", help="also drop the configs of VMs the node still owns")
    sub.add_parser("joininfo", help="(cluster side) what a joining node checks; prints JSON")
    updatecerts = sub.add_parser("updatecerts", help="renew this node's certificate and republish its SSH keys")
    updatecerts.add_argument("--force", action="store_true", help="issue a new certificate even if one exists")


def _password(options: dict[str, Any]) -> str | None:
    source = options.get("password_file")
    if source == "-":
        return sys.stdin.readline().rstrip("\n")
    if source:
        with open(source) as handle:
            return handle.readline().rstrip("\n")
    if sys.stdin.isatty():
        return getpass.getpass("Please enter the root password of the cluster node (empty: use SSH keys): ") or None
    return None


def _vmids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--vmids: not a list of VM ids: {text!r}") from None


def handle(verb: str, options: dict[str, Any], out: Any) -> None:
    started = time.monotonic()

    def progress(line: str) -> None:
        out.write(f"[{time.monotonic() - started:6.1f}s] {line}")
        out.flush()

    try:
        if verb == "create":
            if options["foreground"]:
                join.create(options["clustername"], nodeid=options["nodeid"], votes=options["votes"], progress=progress)
            else:
                _create_task(options, out)
        elif verb == "add":
            _add(options, progress)
        elif verb == "addnode":
            if options["confirm_on_stdin"]:
                out.write(json.dumps(nodelist.join_info()))
                out.flush()
                if sys.stdin.readline().strip() != "add":
                    raise CommandError("join aborted by the joining node")
            answer = nodelist.add_node(
                options["node"],
                options["new_node_ip"],
                nodeid=options["nodeid"],
                votes=options["votes"],
                force=options["force"],
                vmids=_vmids(options["vmids"]),
                user=os.environ.get("PVE_USER", "root@pam"),
            )
            out.write(json.dumps(answer))
        elif verb == "delnode":
            for note in nodelist.delete_node(options["node"], force=options["force"]):
                progress(note)
            progress(f"Killing node {options['node']}")
        elif verb == "joininfo":
            out.write(json.dumps(nodelist.join_info()))
        elif verb == "updatecerts":
            for line in nodelist.update_certs(force=options["force"]):
                progress(line)
    except (join.JoinError, nodelist.MembershipError, ssh.SSHError, ReplicationError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _create_task(options: dict[str, Any], out: Any) -> None:
    """Submit ``clustercreate`` to this node's worker and follow its log (checks first, so refusals are at once)."""
    from portal.tasks import follow, runner
    from portal.tasks.exceptions import TaskFailed

    join.assert_joinable()
    upid = runner.submit(
        "clustercreate",
        options["clustername"],
        "root@pam",
        "cluster.create",
        name=options["clustername"],
        nodeid=options["nodeid"],
        votes=options["votes"],
        actor="root@pam",
    )
    out.write(upid)
    try:
        follow.follow_task(upid, getattr(out, "_out", out), timeout=900)
    except TaskFailed as exc:
        raise CommandError(str(exc)) from None


def _add(options: dict[str, Any], progress: join.Progress) -> None:
    from cluster.membership import join_remote

    password = _password(options)
    if options["use_api"]:
        if not options["fingerprint"] or password is None:
            raise CommandError("joining over the API needs --fingerprint and root's password")
        join_remote.join_over_api(
            options["hostname"],
            password=password,
            fingerprint=options["fingerprint"],
            nodeid=options["nodeid"],
            votes=options["votes"],
            force=options["force"],
            progress=progress,
        )
        return
    join_remote.join_over_ssh(
        options["hostname"],
        password=password,
        ssh_fingerprint=options["ssh_fingerprint"],
        fingerprint=options["fingerprint"],
        confirm=ssh.ask_on_terminal,
        nodeid=options["nodeid"],
        votes=options["votes"],
        force=options["force"],
        progress=progress,
    )
