"""Storage definitions (``storage.cfg``): create, update, delete; validated, authorised, audited.

As Proxmox's ``/storage`` API: Datastore.Allocate on ``/storage`` to add, change or remove a
storage; moving one into or out of a pool also takes Pool.Allocate on the pools. Values are
strict, so no value can break a line of storage.cfg. ``actor`` is the request's user (root@pam's
for the CLIs); its cluster log entry travels in the change set of the change.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction

from authz.models import Pool
from authz.services.acl import remove_object_access
from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import config_schema as schema
from vms import permissions
from vms.config import ConfigError
from vms.models import Storage
from vms.property_strings import shown

FIELDS = ("type", "path", "content", "shared", "nodes", "disable", "format", "pool")
TYPES = ("dir", "btrfs")
CONTENT_TYPES = ("backup", "images", "import", "iso", "rootdir", "snippets", "vztmpl")
FORMATS = {"dir": ("raw", "qcow2", "vmdk"), "btrfs": ("raw",)}  # the image formats of each plugin
MAX_PATH = 4096
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
CLUSTER = "cluster"


def _list(value: object, item_re: re.Pattern[str] | None, allowed: tuple[str, ...], what: str) -> str:
    items = sorted({item.strip() for item in str(value or "").split(",") if item.strip()})
    bad = [i for i in items if (item_re is not None and not item_re.fullmatch(i)) or (allowed and i not in allowed)]
    if bad:
        raise ValueError(f"invalid {what} '{shown(bad[0])}'")
    return ",".join(items)


def _path(value: object) -> str:
    path = str(value or "")
    if schema.CONTROL_RE.search(path):
        raise ValueError("value contains control or bidirectional formatting characters")
    if not path.startswith("/") or len(path) > MAX_PATH:
        raise ValueError(f"invalid path '{shown(path)}' (an absolute path of at most {MAX_PATH} characters)")
    if posixpath.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"path '{shown(path)}' is not normalised (no '..', '.', '//' or trailing '/')")
    return path


def validate_storage(storeid: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """The storage's fields checked and normalised; ConfigError lists every bad one."""
    errors: dict[str, str] = {}
    checked: dict[str, Any] = {}
    if not isinstance(storeid, str) or not schema.STORAGE_RE.fullmatch(storeid) or len(storeid) > 64:
        errors["storage"] = f"invalid storage ID '{shown(str(storeid))}'"
    unknown = sorted(set(fields) - set(FIELDS))
    for key in unknown:
        errors[key] = "property is not defined in schema and the schema does not allow additional properties"
    checks: dict[str, Callable[[Any], Any]] = {
        "type": lambda v: str(v) if str(v) in TYPES else _fail(f"unknown storage type '{shown(str(v))}'"),
        "path": _path,
        "content": lambda v: _list(v, None, CONTENT_TYPES, "content type"),
        "nodes": lambda v: _list(v, NODE_RE, (), "node name"),
        "shared": bool,
        "disable": bool,
        "format": lambda v: (
            str(v) if str(v) in ("", "raw", "qcow2", "vmdk") else _fail(f"invalid format '{shown(str(v))}'")
        ),
    }
    for key, check in checks.items():
        if key in fields:
            try:
                checked[key] = check(fields[key])
            except ValueError as exc:
                errors[key] = str(exc)
    pool = fields.get("pool") or None
    if pool is not None and not Pool.objects.filter(poolid=str(pool)).exists():
        errors["pool"] = f"pool '{shown(str(pool))}' does not exist"
    checked["pool"] = str(pool) if pool is not None else None
    if errors:
        raise ConfigError(errors)
    return checked


def _fail(message: str) -> str:
    raise ValueError(message)


def check_storage(
    storeid: str, fields: Mapping[str, object], *, actor: Any, current: Storage | None = None
) -> dict[str, Any]:
    """Everything a create (``current`` None) or an update checks, without writing: the checked fields."""
    checked = validate_storage(storeid, fields)
    if current is None and "path" not in checked:
        raise ConfigError({"path": "property is missing and it is not optional"})
    kind = checked.get("type", current.type if current is not None else "dir")
    if current is not None and kind != current.type:
        raise ConfigError({"type": f"can't change the type of storage '{storeid}' ({current.type})"})
    fmt = checked.get("format", current.format if current is not None else "")
    if fmt and fmt not in FORMATS[kind]:
        raise ConfigError({"format": f"storage type '{kind}' does not support format '{fmt}'"})
    rules: list[permissions.Rule] = [permissions.Need(("Datastore.Allocate",), "/storage")]
    old_pool = current.pool_id if current is not None else None
    if checked["pool"] != old_pool:  # changes who may use the storage: Proxmox's check_perm_modify
        rules.append(permissions.Need(("Permissions.Modify", "Datastore.Allocate"), f"/storage/{storeid}", any_of=True))
        rules += [permissions.Need(("Pool.Allocate",), f"/pool/{p}") for p in (old_pool, checked["pool"]) if p]
    permissions.authorize(actor, rules)
    if current is None and Storage.objects.filter(storeid=storeid).exists():
        raise ConflictError(f"storage ID '{storeid}' already defined")
    return checked


def _described(storage: Storage) -> str:
    parts = [f"-{key} {shown(str(getattr(storage, key)))}" for key in ("type", "path", "content", "nodes", "format")]
    parts += [f"-{key} 1" for key in ("shared", "disable") if getattr(storage, key)]
    parts += [f"-pool {storage.pool_id}"] if storage.pool_id else []
    return " ".join(parts)


def _apply(storage: Storage, checked: Mapping[str, Any]) -> None:
    for key, value in checked.items():
        setattr(storage, "pool_id" if key == "pool" else key, value)


def create_storage(storeid: str, fields: Mapping[str, object], *, actor: Any) -> Storage:
    checked = check_storage(storeid, fields, actor=actor)
    storage = Storage(storeid=storeid)
    _apply(storage, checked)
    with transaction.atomic(using=CLUSTER):
        storage.save()
        log_cluster_message(
            f"create storage '{storeid}': {_described(storage)}", user=permissions.principal_of(actor) or ""
        )
    return storage


def update_storage(storage: Storage, fields: Mapping[str, object], *, actor: Any) -> Storage:
    """Change ``storage``; the version it was read at is the base, so a change made since is a conflict."""
    checked = check_storage(storage.storeid, fields, actor=actor, current=storage)
    with transaction.atomic(using=CLUSTER):
        _apply(storage, checked)
        storage.save()
        log_cluster_message(
            f"update storage '{storage.storeid}': {_described(storage)}", user=permissions.principal_of(actor) or ""
        )
    return storage


def delete_storage(storage: Storage, *, actor: Any) -> None:
    permissions.authorize(actor, [permissions.Need(("Datastore.Allocate",), "/storage")])
    with transaction.atomic(using=CLUSTER):
        storage.delete()
        remove_object_access(f"/storage/{storage.storeid}")
        log_cluster_message(f"delete storage '{storage.storeid}'", user=permissions.principal_of(actor) or "")
