"""``/cluster/config``: create a cluster, join one (over the API, as Proxmox's GUI does), add and remove nodes.

Reading needs ``Sys.Audit`` on ``/``. Creating or joining a cluster and adding or removing a
node are root@pam's alone, as in Proxmox (those methods declare no permission there, which
means root@pam itself and none of its API tokens): no ACL grants them. Create and join run as tasks of this node's Celery worker (``clustercreate``,
``clusterjoin``) and answer with the UPID at once; adding and removing a node are single replicated changes answered directly.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, principal_of
from cluster import services
from cluster.membership import join, nodelist
from cluster.models import Node
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks import runner

NODE_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
CLUSTER_NAME = r"[A-Za-z0-9]([A-Za-z0-9-]{0,13}[A-Za-z0-9])?"
FINGERPRINT = r"([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}"


SUPERUSER = "root@pam"


def require_root(request: Request) -> str:
    """Proxmox's rule for methods without a permission declaration: root@pam itself, not one of its tokens.

    Returns the actor for the cluster log.
    """
    if principal_of(request.user) != SUPERUSER or not getattr(request.user, "is_active", False):
        raise APIError(403, f"Permission check failed (user != {SUPERUSER})")
    return SUPERUSER


class ConfigIndexView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        return ok([{"name": name} for name in ("apiversion", "join", "nodes", "qdevice", "totem")])

    def post(self, request: Request, **kwargs: Any) -> Response:
        user = require_root(request)
        values = params.collect(request, {})
        name = params.string(values.get("clustername"), "clustername", max_length=15, pattern=CLUSTER_NAME)
        nodeid = params.integer(values["nodeid"], "nodeid", minimum=1) if "nodeid" in values else None
        votes = params.integer(values.get("votes", 1), "votes", minimum=1)
        try:
            join.assert_joinable()
        except join.JoinError as exc:
            raise APIError(500, str(exc)) from None
        return ok(
            runner.submit(
                "clustercreate", name, user, "cluster.create", name=name, nodeid=nodeid, votes=votes, actor=user
            )
        )


class ApiVersionView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        return ok(nodelist.JOIN_API_VERSION)


class JoinView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        try:
            return ok(nodelist.join_info())
        except nodelist.MembershipError as exc:
            raise APIError(500, str(exc)) from None

    def post(self, request: Request, **kwargs: Any) -> Response:
        """Join this node to the cluster of ``hostname`` (the fingerprint is required, the password is root@pam's)."""
        user = require_root(request)
        values = params.collect(request, {})
        host = params.string(values.get("hostname"), "hostname", max_length=255)
        fingerprint = params.string(values.get("fingerprint"), "fingerprint", pattern=FINGERPRINT)
        password = params.string(values.get("password"), "password", max_length=1024)
        nodeid = params.integer(values["nodeid"], "nodeid", minimum=1) if "nodeid" in values else None
        votes = params.integer(values.get("votes", 1), "votes", minimum=0)
        force = bool(params.boolean(values.get("force", 0), "force"))
        try:
            join.assert_joinable(force=force)
        except join.JoinError as exc:
            raise APIError(500, str(exc)) from None
        upid = runner.submit(
            "clusterjoin",
            "",
            user,
            "cluster.join",
            secret_kwargs={"password": password},  # never in the task message (portal.tasks.task_secrets)
            host=host,
            fingerprint=fingerprint,
            nodeid=nodeid,
            votes=votes,
            force=force,
        )
        return ok(upid)


class NodesView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        return ok(
            [
                {
                    "node": n.name,
                    "name": n.name,
                    "nodeid": str(n.nodeid),
                    "quorum_votes": str(n.quorum_votes),
                    "ring0_addr": n.address,
                }
                for n in Node.objects.order_by("name")
            ]
        )


class NodeView(PVEAPIView):
    proxyto = None  # ``{node}`` here is the node being added or removed, answered by this member

    def post(self, request: Request, node: str, **kwargs: Any) -> Response:
        """addnode: the cluster side of a join; answers with the corosync authkey and corosync.conf.

        The authkey reaches root@pam only, over the TLS connection the joining node pinned to this
        node's certificate fingerprint before it sent the password (``join_remote.PinnedHTTPS``).
        """
        user = require_root(request)
        values = params.collect(request, {"node": node})
        params.string(node, "node", pattern=NODE_NAME)
        address = params.string(values.get("new_node_ip", values.get("link0")), "new_node_ip", max_length=255)
        nodeid = params.integer(values["nodeid"], "nodeid", minimum=1) if "nodeid" in values else None
        votes = params.integer(values.get("votes", 1), "votes", minimum=0)
        force = bool(params.boolean(values.get("force", 0), "force"))
        vmids_text = params.string(values.get("vmids", ""), "vmids", pattern=r"[0-9,]*")
        try:
            answer = services.add_node(
                node,
                address.split(",")[0].removeprefix("address="),
                nodeid=nodeid,
                votes=votes,
                force=force,
                vmids=[int(v) for v in vmids_text.split(",") if v],
                user=user,
            )
        except nodelist.MembershipError as exc:
            raise APIError(500, str(exc)) from None
        return ok(answer)

    def delete(self, request: Request, node: str, **kwargs: Any) -> Response:
        user = require_root(request)
        values = params.collect(request, {"node": node})
        force = bool(params.boolean(values.get("force", 0), "force"))
        try:
            services.delete_node(node, force=force, user=user)
        except nodelist.MembershipError as exc:
            if "not a known host" in str(exc):
                raise ParameterError({"node": str(exc)}) from None
            raise APIError(500, str(exc)) from None
        return ok(None)
