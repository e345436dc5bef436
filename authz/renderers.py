"""``user.cfg``, ``domains.cfg``, ``priv/shadow.cfg`` and key files rendered from the models."""

from __future__ import annotations

from urllib.parse import quote

from authz.models import SUPERUSER, ACLEntry, APIToken, Group, GroupMember, KeyMaterial, Pool, Realm, Role, User
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
    """Users (each followed by its tokens), groups, pools, custom roles and ACLs, as Proxmox writes them."""
    tokens: dict[str, list[APIToken]] = {}
    for token in APIToken.objects.using("cluster").all():
        tokens.setdefault(token.user_id, []).append(token)
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
        for token in tokens.get(user.userid, []):
            lines.append(f"token:{token.tokenid}:{token.expire}:{int(token.privsep)}:{_text(token.comment)}:")
    lines.append("")
    members: dict[str, list[str]] = {}
    for groupid, userid in GroupMember.objects.using("cluster").order_by("user_id").values_list("group_id", "user_id"):
        members.setdefault(groupid, []).append(userid)
    for group in Group.objects.using("cluster").all():
        lines.append(f"group:{group.groupid}:{','.join(members.get(group.groupid, []))}:{_text(group.comment)}:")
    lines.append("")
    for pool in Pool.objects.using("cluster").all():
        vmids = ",".join(str(v) for v in pool.vms.order_by("vmid").values_list("vmid", flat=True))
        stores = ",".join(pool.storages.order_by("storeid").values_list("storeid", flat=True))
        lines.append(f"pool:{pool.poolid}:{_text(pool.comment)}:{vmids}:{stores}:")
    lines.append("")
    for role in Role.objects.using("cluster").all():
        lines.append(f"role:{role.roleid}:{','.join(sorted(role.privs))}:")
    lines.append("")
    lines.extend(_acl_lines())
    lines.append("")
    return {"user.cfg": MirrorFile("\n".join(lines) + "\n")}


def _acl_lines() -> list[str]:
    """One line per (path, propagate, role list), naming every user/token/@group holding exactly that."""
    grants: dict[str, dict[tuple[str, bool], list[str]]] = {}
    for entry in ACLEntry.objects.using("cluster").order_by("path", "type", "ugid", "roleid"):
        if entry.ugid == SUPERUSER:
            continue
        name = f"@{entry.ugid}" if entry.type == "group" else entry.ugid
        grants.setdefault(entry.path, {}).setdefault((name, entry.propagate), []).append(entry.roleid)
    lines = []
    for path in sorted(grants):
        combos: dict[tuple[bool, str], list[str]] = {}
        for (name, propagate), roles in grants[path].items():
            combos.setdefault((propagate, ",".join(sorted(roles))), []).append(name)
        for (propagate, role_list), names in sorted(combos.items(), key=lambda item: (not item[0][0], item[0][1])):
            lines.append(f"acl:{int(propagate)}:{path}:{','.join(sorted(names))}:{role_list}:")
    return lines


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
register_tree_renderer(
    [
        "authz.user",
        "authz.pool",
        "authz.group",
        "authz.groupmember",
        "authz.role",
        "authz.aclentry",
        "authz.apitoken",
        "vms.vm",
        "vms.storage",
    ],
    render_user_cfg,
)
register_tree_renderer(["authz.realm"], render_domains_cfg)
register_tree_renderer(["authz.user"], render_shadow_cfg)
