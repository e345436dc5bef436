"""``GET /access/permissions``: the effective privileges of a user or API token, per path (Proxmox's).

Each path maps privilege -> 1 when held propagated, 0 when held on that path only. Anyone may ask
for themselves and their own tokens; another user or their tokens needs ``Sys.Audit`` on
``/access`` (checked before anything about them is looked up). With ``path`` only that path;
without it ``/`` and the top-level paths, every path of the ACL tree and every pool's path,
each listed when something is held there.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import ids, resolver
from authz.exceptions import AccessError
from authz.models import APIToken, User
from authz.permissions import check, principal_of
from portal.api import params
from portal.api.views import PVEAPIView, ok

TOP_LEVEL = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms", "/mapping")
PATH_PATTERN = r"/[A-Za-z0-9/._@!:+-]*"


def _is_own(me: str | None, principal: str) -> bool:
    """Oneself, or one's own token (``me!name``)."""
    return me is not None and (principal == me or ("!" not in me and principal.startswith(me + "!")))


def _exists(principal: str) -> bool:
    if "!" in principal:
        return ids.is_valid_tokenid(principal) and APIToken.objects.filter(tokenid=principal).exists()
    return ids.is_valid_userid(principal) and User.objects.filter(userid=principal).exists()


class PermissionsView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            userid = p.string("userid", max_length=256, default=None)
            path = p.string("path", max_length=1024, pattern=PATH_PATTERN, default=None)
        me = principal_of(request.user)
        principal = userid or me or ""
        if not _is_own(me, principal):
            check(request.user, "/access", ["Sys.Audit"])
        if not _exists(principal):
            raise AccessError(f"no such user or token '{principal}'")
        state = resolver.state()
        paths = [path] if path else _candidate_paths(state)
        answer: dict[str, dict[str, int]] = {}
        for candidate in paths:
            flags = resolver.privilege_flags(state, principal, candidate)
            if flags or path:
                answer[candidate] = {privilege: int(propagate) for privilege, propagate in sorted(flags.items())}
        return ok(answer)


def _candidate_paths(state: resolver.ACLState) -> list[str]:
    found = set(TOP_LEVEL) | set(state.acl) | {f"/pool/{pool}" for pool in state.pool_of.values()}
    return sorted(found)
