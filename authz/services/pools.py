"""Resource pools: created, commented and removed with Pool.Allocate on the pool, audited, one change set each."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from authz import audit, delegation, ids
from authz.exceptions import AccessError
from authz.models import ACLEntry, Pool

CLUSTER = "cluster"


def _comment(comment: Any) -> str:
    text = str(comment)
    if "\n" in text or "\r" in text or len(text) > 4096:
        raise AccessError("invalid value for comment")
    return text


def add_pool(poolid: str, *, actor: Any, comment: str = "") -> Pool:
    """``POST /pools``: Pool.Allocate on ``/pool/<poolid>``; a nested pool needs its parent."""
    ids.check_pool_id(poolid)
    delegation.check(actor, f"/pool/{poolid}", ["Pool.Allocate"])
    parent = poolid.rpartition("/")[0]
    if parent and not Pool.objects.filter(poolid=parent).exists():
        raise AccessError(f"parent pool '{parent}' does not exist")
    if Pool.objects.filter(poolid=poolid).exists():
        raise AccessError(f"pool '{poolid}' already exists")
    pool = Pool(poolid=poolid, comment=_comment(comment))
    with transaction.atomic(using=CLUSTER):
        pool.save(force_insert=True)
        audit.record(actor, f"added pool '{poolid}'")
    return pool


def _pool(poolid: str) -> Pool:
    pool = Pool.objects.filter(poolid=poolid).first()
    if pool is None:
        raise AccessError(f"pool '{poolid}' does not exist")
    return pool


def modify_pool(poolid: str, *, actor: Any, comment: str, version: int | None = None) -> Pool:
    pool = _pool(poolid)
    delegation.check(actor, f"/pool/{poolid}", ["Pool.Allocate"])
    pool.comment = _comment(comment)
    if version is not None:
        pool.version = version
    with transaction.atomic(using=CLUSTER):
        pool.save()
        audit.record(actor, f"changed pool '{poolid}' (comment)")
    return pool


def delete_pool(poolid: str, *, actor: Any) -> None:
    """Only an empty pool is removed, with its ACL entries (Proxmox refuses one with members)."""
    pool = _pool(poolid)
    delegation.check(actor, f"/pool/{poolid}", ["Pool.Allocate"])
    if pool.vms.exists() or pool.storages.exists():
        raise AccessError(f"pool '{poolid}' is not empty")
    if Pool.objects.filter(poolid__startswith=f"{poolid}/").exists():
        raise AccessError(f"pool '{poolid}' has nested pools")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(path=f"/pool/{poolid}"):
            entry.delete()
        pool.delete()
        audit.record(actor, f"removed pool '{poolid}'")
