"""``user.cfg``, ``domains.cfg``, ``priv/shadow.cfg`` and key files rendered from the models."""

from __future__ import annotations

from urllib.parse import quote

from authz.models import KeyMaterial, Pool, Realm, User
from replicator.mirror import (
    Files,
    MirrorFile,
    register_object_renderer,
    register_tree_renderer,
)

REALM_KEYS_ORDER = ("comment", "default")


def _text(value: str) -> str:
    """user.cfg text fields are URI-escaped so ':' and newlines cannot break the line format."""
    return quote(value, safe=" @.,!#$%&'()*+-/;<=>?[]^_`{|}~")


def render_user_cfg() -> Files:
    lines: list[str] = []
    for user in User.objects.using("cluster").all():
        lines.append(
            ":".join(
                [
                    "user",
                    user.userid,
                    "1" if user.enable else "0",
                    str(user.expire),
                    _text(user.firstname),
                    _text(user.lastname),
                    _text(user.email),
                    _text(user.comment),
                    _text(user.keys),
                    "",
                ]
            )
        )
    lines.append("")
    for pool in Pool.objects.using("cluster").all():
        vmids = ",".join(str(v) for v in pool.vms.order_by("vmid").values_list("vmid", flat=True))
        stores = ",".join(pool.storages.order_by("storeid").values_list("storeid", flat=True))
        lines.append(f"pool:{pool.poolid}:{_text(pool.comment)}:{vmids}:{stores}:")
    lines.append("")
    return {"user.cfg": MirrorFile("\n".join(lines) + "\n")}


def render_domains_cfg() -> Files:
    blocks: list[str] = []
    for realm in Realm.objects.using("cluster").all():
        block = [f"{realm.type}: {realm.realm}"]
        if realm.comment:
            block.append(f"\tcomment {realm.comment}")
        if realm.default:
            block.append("\tdefault 1")
        for key in sorted(realm.options):
            block.append(f"\t{key} {realm.options[key]}")
        blocks.append("\n".join(block))
    return {"domains.cfg": MirrorFile("\n\n".join(blocks) + "\n")}


def render_shadow_cfg() -> Files:
    lines = [
        f"{user.userid}:{user.password}:"
        for user in User.objects.using("cluster").filter(realm_id="pve")
        if user.password
    ]
    return {"priv/shadow.cfg": MirrorFile("".join(line + "\n" for line in lines))}


def render_key_material(key: KeyMaterial) -> Files:
    return {key.path: MirrorFile(key.content)}


register_object_renderer("authz.keymaterial", render_key_material)
register_tree_renderer(["authz.user", "authz.pool", "vms.vm", "vms.storage"], render_user_cfg)
register_tree_renderer(["authz.realm"], render_domains_cfg)
register_tree_renderer(["authz.user"], render_shadow_cfg)
