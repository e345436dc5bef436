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
from authz.permissions import check, has_privileges
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms.config_schema import STORAGE_RE
from vms.services import pools

AUDIT = ("Pool.Audit", "Pool.Allocate")


def _listing(pool: Pool, with_members: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"poolid": pool.poolid, "comment": pool.comment}
    if with_members:
        entry["members"] = pools.members(pool)
    return entry


class PoolsView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            poolid = p.string("poolid", max_length=64, default=None)
            kind = p.enum("type", ("qemu", "lxc", "storage"), default=None)
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

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            poolid = p.string("poolid", max_length=64)
            comment = p.string("comment", max_length=4096, default="")
        services.add_pool(poolid, actor=request.user, comment=comment)
        return ok(None)


class PoolView(PVEAPIView):
    def get(self, request: Request, poolid: str, **kwargs: Any) -> Response:
        check(request.user, f"/pool/{poolid}", ["Pool.Audit"])
        values = params.collect(request, {"poolid": poolid, **kwargs})
        with params.ParamCollector(values) as p:
            kind = p.enum("type", ("qemu", "lxc", "storage"), default=None)
        pool = Pool.objects.filter(poolid=poolid).first()
        if pool is None:
            raise AccessError(f"pool '{poolid}' does not exist")
        listed = pools.members(pool)
        answer: dict[str, Any] = {"members": [m for m in listed if kind is None or m["type"] == kind]}
        if pool.comment:
            answer["comment"] = pool.comment
        return ok(answer)

    def put(self, request: Request, poolid: str, **kwargs: Any) -> Response:
        values = params.collect(request, {"poolid": poolid, **kwargs})
        with params.ParamCollector(values) as p:
            comment = p.string("comment", max_length=4096, default=None)
            delete = p.boolean("delete", default=0)
            allow_move = p.boolean("allow-move", default=0)
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

    def delete(self, request: Request, poolid: str, **kwargs: Any) -> Response:
        services.delete_pool(poolid, actor=request.user)
        return ok(None)
