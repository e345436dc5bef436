"""``/pools`` and ``/pools/{poolid}``: resource pools as Proxmox's pool API serves them.

``GET /pools`` lists the pools the caller holds Pool.Audit or Pool.Allocate on (with ``poolid``:
that pool, with its members); ``POST`` creates one (Pool.Allocate on it); ``GET /pools/{poolid}``
answers its comment and members (Pool.Audit, checked before the pool is looked up); ``PUT``
changes the comment and adds, or with ``delete`` removes, the ``vms`` and ``storage`` listed
(``allow-move`` takes them out of another pool); ``DELETE`` removes an empty pool.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import ids, services
from authz.exceptions import AccessError
from authz.models import Pool
from authz.permissions import has_privileges
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.schema import INT, NULL, STR, Permission, array, boolean, endpoint, enum, obj, string
from portal.api.views import PVEAPIView, ok
from vms.config_schema import STORAGE_RE
from vms.services import pools

AUDIT = ("Pool.Audit", "Pool.Allocate")
POOLID = string("The pool's id.", max_length=64, pattern=ids.POOL_PATTERN)
KIND = enum(("qemu", "lxc", "storage"), "Only members of this type.", optional=True)
COMMENT = string("A comment.", max_length=4096, optional=True)
MEMBER = obj({"id": STR, "type": STR}, vmid=INT, node=STR, storage=STR, name=STR, template=INT)
POOL = obj({"poolid": STR}, comment=STR, members=array(MEMBER))


def _listing(pool: Pool, with_members: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"poolid": pool.poolid, "comment": pool.comment}
    if with_members:
        entry["members"] = pools.members(pool)
    return entry


class PoolsView(PVEAPIView):
    @endpoint(
        "List the pools the caller may see (with poolid: that pool, with its members).",
        Permission(description="Pools with Pool.Audit or Pool.Allocate on /pool/{poolid}.", user="all"),
        {"poolid": POOLID.but(optional=True), "type": KIND},
        returns=array(POOL),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        poolid, kind = values["poolid"], values["type"]
        found = Pool.objects.all() if poolid is None else Pool.objects.filter(poolid=poolid)
        listed = []
        for pool in found:
            if not has_privileges(request.user, f"/pool/{pool.poolid}", AUDIT, any_of=True):
                continue
            entry = _listing(pool, poolid is not None)
            if kind is not None and "members" in entry:
                entry["members"] = [m for m in entry["members"] if m["type"] == kind]
            listed.append(entry)
        return ok(listed)

    @endpoint(
        "Create a pool.",
        Permission("/pool/{poolid}", ("Pool.Allocate",)),
        {"poolid": POOLID, "comment": COMMENT.but(default="")},
        returns=NULL,
    )
    def post(self, request: Request, values: dict[str, Any]) -> Response:
        poolid, comment = values["poolid"], values["comment"]
        services.add_pool(poolid, actor=request.user, comment=comment)
        return ok(None)


class PoolView(PVEAPIView):
    @endpoint(
        "A pool's comment and members.",
        Permission("/pool/{poolid}", ("Pool.Audit",)),
        {"poolid": POOLID, "type": KIND},
        returns=obj({"members": array(MEMBER)}, comment=STR),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        poolid, kind = values["poolid"], values["type"]
        pool = Pool.objects.filter(poolid=poolid).first()
        if pool is None:
            raise AccessError(f"pool '{poolid}' does not exist")
        listed = pools.members(pool)
        answer: dict[str, Any] = {"members": [m for m in listed if kind is None or m["type"] == kind]}
        if pool.comment:
            answer["comment"] = pool.comment
        return ok(answer)

    @endpoint(
        "Change a pool's comment; add its members, or with delete remove them.",
        Permission(
            "/pool/{poolid}",
            ("Pool.Allocate",),
            description="And VM.Allocate on each VM, Datastore.Allocate or Permissions.Modify on each storage; "
            "allow-move: Pool.Allocate on the pool they leave.",
        ),
        {
            "poolid": POOLID,
            "comment": COMMENT,
            "vms": string("VMIDs to add (or remove).", optional=True),
            "storage": string("Storage ids to add (or remove).", optional=True),
            "delete": boolean("Remove the listed members instead.", optional=True, default=0),
            "allow-move": boolean("Take members out of the pool they are in.", optional=True, default=0),
        },
        returns=NULL,
    )
    def put(self, request: Request, values: dict[str, Any]) -> Response:
        poolid, comment, delete, allow_move = (
            values["poolid"],
            values["comment"],
            values["delete"],
            values["allow-move"],
        )
        vms, storages = params.id_list(values.get("vms")), params.id_list(values.get("storage"))
        for vmid in vms:
            if not vmid.isdigit() or not 100 <= int(vmid) <= 999_999_999:
                raise ParameterError({"vms": f"invalid VM id '{vmid}'"})
        for storeid in storages:
            if not STORAGE_RE.fullmatch(storeid):
                raise ParameterError({"storage": f"invalid storage id '{storeid}'"})
        if delete and not (vms or storages):
            raise ParameterError({"delete": "needs vms or storage"})
        ids.check_pool_id(poolid)
        pools.update_pool(
            poolid,
            actor=request.user,
            comment=comment,
            vms=[int(v) for v in vms],
            storages=storages,
            delete=bool(delete),
            allow_move=bool(allow_move),
        )
        return ok(None)

    @endpoint(
        "Remove an empty pool.",
        Permission("/pool/{poolid}", ("Pool.Allocate",)),
        {"poolid": POOLID},
        returns=NULL,
    )
    def delete(self, request: Request, values: dict[str, Any]) -> Response:
        services.delete_pool(values["poolid"], actor=request.user)
        return ok(None)
