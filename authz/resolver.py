"""The permission resolver: PVE-INTERNALS §6.6, exactly, over a cached snapshot of the ACL state.

The snapshot (ACL tree, group members, roles, pool members, tokens, users) is rebuilt when the
replicated version moves, so a grant or a revocation made on any node is in force on the next
check everywhere: one indexed query per check decides whether the cache is still current. Pool
members come from the providers the apps register (``authz.pool_members``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from authz import pool_members
from authz.privileges import BUILTIN_ROLES, NO_ACCESS, PRIVILEGES

SUPERUSER = "root@pam"
RoleSet = dict[str, bool]  # role -> propagate
PrivilegeSet = dict[str, bool]  # privilege -> propagate
_Privileges = TypeVar("_Privileges", set[str], PrivilegeSet)


class TokenInfo(NamedTuple):
    """An API token as resolution needs it: its owner is the row's user, never parsed from the id."""

    user: str
    privsep: bool
    expire: int


@dataclass
class ACLState:
    """Everything resolution needs, as plain data (loaded from the database or built in tests)."""

    # path -> "user" | "group" | "token" -> ugid -> {role: propagate}
    acl: dict[str, dict[str, dict[str, RoleSet]]] = field(default_factory=dict)
    groups_of: dict[str, set[str]] = field(default_factory=dict)  # userid -> groupids
    roles: dict[str, frozenset[str]] = field(default_factory=lambda: dict(BUILTIN_ROLES))
    pool_of: dict[str, str] = field(default_factory=dict)  # "/vms/100" or "/storage/x" -> poolid
    users: dict[str, tuple[bool, int]] = field(default_factory=dict)  # userid -> (enable, expire)
    tokens: dict[str, TokenInfo] = field(default_factory=dict)  # tokenid -> its row

    def grant(self, path: str, kind: str, ugid: str, role: str, propagate: bool = True) -> None:
        self.acl.setdefault(path, {}).setdefault(kind, {}).setdefault(ugid, {})[role] = propagate


def _prefixes(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _applicable(entries: RoleSet, final: bool) -> RoleSet:
    return {role: propagate for role, propagate in entries.items() if final or propagate}


def walk(state: ACLState, principal: str, path: str, *, is_token: bool = False) -> RoleSet:
    """Steps 3-4: roles from the ACL tree for a user, or (``is_token``) for a token's own entries."""
    roles: RoleSet = {}
    for prefix in _prefixes(path):
        node = state.acl.get(prefix)
        if not node:
            continue
        final = prefix == path
        if is_token:
            found = _applicable(node.get("token", {}).get(principal, {}), final)
            if found:
                roles = found
            continue
        found = _applicable(node.get("user", {}).get(principal, {}), final)
        if found:
            roles = found
            continue
        union: RoleSet = {}
        for group in state.groups_of.get(principal, ()):
            union.update(_applicable(node.get("group", {}).get(group, {}), final))
        if union:
            roles = union
    if NO_ACCESS in roles:
        return {NO_ACCESS: roles[NO_ACCESS]}
    return roles


def roles_at(state: ACLState, principal: str, path: str, *, is_token: bool = False) -> RoleSet:
    """Step 5: the walk, plus the roles of the pool holding a VM or storage."""
    roles = walk(state, principal, path, is_token=is_token)
    pool = state.pool_of.get(path)
    if pool is None:
        return roles
    if NO_ACCESS in roles:
        return roles
    pool_roles = walk(state, principal, f"/pool/{pool}", is_token=is_token)
    if NO_ACCESS in pool_roles:
        return {NO_ACCESS: False}
    for role in pool_roles:
        roles.setdefault(role, False)
    return roles


def _privilege_set(state: ACLState, roles: RoleSet) -> set[str]:
    privs: set[str] = set()
    for role in roles:
        privs |= state.roles.get(role, frozenset())
    return privs


def _privilege_flags(state: ACLState, roles: RoleSet) -> PrivilegeSet:
    """Each privilege of the roles, propagated if any role holding it is (Proxmox's flag)."""
    privs: PrivilegeSet = {}
    for role, propagate in roles.items():
        for privilege in state.roles.get(role, frozenset()):
            privs[privilege] = privs.get(privilege, False) or propagate
    return privs


def _active(entry: tuple[bool, int] | None, now: float) -> bool:
    return entry is not None and entry[0] and (entry[1] == 0 or entry[1] > now)


def _resolve(
    state: ACLState,
    principal: str,
    path: str,
    now: float,
    collect: Callable[[ACLState, RoleSet], _Privileges],
    intersect: Callable[[_Privileges, _Privileges], _Privileges],
) -> _Privileges:
    """Steps 1-7 for a user or a token; a token is looked up by its id and resolved through its
    row's user, never by splitting the id. ``collect`` turns roles into privileges."""
    if principal == SUPERUSER:
        return collect(state, {"Administrator": True})
    token = state.tokens.get(principal)
    if token is None:
        active = _active(state.users.get(principal), now)
        return collect(state, roles_at(state, principal, path) if active else {})
    if token.expire and token.expire <= now:
        return collect(state, {})
    user_privs = _resolve(state, token.user, path, now, collect, intersect)
    if not token.privsep:  # privsep off: the token is its user
        return user_privs
    return intersect(collect(state, roles_at(state, principal, path, is_token=True)), user_privs)


def privileges(state: ACLState, principal: str, path: str, now: float | None = None) -> set[str]:
    """The privileges ``principal`` (userid or tokenid) holds on ``path``."""
    now = time.time() if now is None else now
    return _resolve(state, principal, path, now, _privilege_set, set.__and__)


def privilege_flags(state: ACLState, principal: str, path: str, now: float | None = None) -> PrivilegeSet:
    """The same privileges, each with whether it is held propagated (for delegating with propagation)."""
    now = time.time() if now is None else now

    def both(own: PrivilegeSet, user: PrivilegeSet) -> PrivilegeSet:
        return {p: own[p] and user[p] for p in own.keys() & user.keys()}

    return _resolve(state, principal, path, now, _privilege_flags, both)


# --- the live snapshot -----------------------------------------------------------------------

_lock = threading.Lock()
_cached: tuple[tuple[int, int], ACLState] | None = None  # ((version, providers' generation), snapshot)
_scope = threading.local()


class request_scope:
    """Within one request the ACL snapshot is checked against the replicated version once.

    A listing of 10,000 VMs then costs one version query, not 10,000; the next request sees any
    change made meanwhile, anywhere in the cluster.
    """

    def __enter__(self) -> None:
        _scope.active, _scope.state = True, None

    def __exit__(self, *exc: object) -> None:
        _scope.active, _scope.state = False, None


def current_version() -> int:
    from replicator.models import ChangeLogEntry

    head = ChangeLogEntry.objects.using("cluster").order_by("-version").values_list("version", flat=True).first()
    return head or 0


def load_state() -> ACLState:
    """Read the ACL state from the cluster database."""
    from authz.models import ACLEntry, APIToken, GroupMember, Role, User

    state = ACLState()
    for entry in ACLEntry.objects.using("cluster").all():
        state.grant(entry.path, entry.type, entry.ugid, entry.roleid, entry.propagate)
    for member in GroupMember.objects.using("cluster").all():
        state.groups_of.setdefault(member.user_id, set()).add(member.group_id)
    for role in Role.objects.using("cluster").all():
        if role.roleid not in BUILTIN_ROLES:
            state.roles[role.roleid] = frozenset(role.privs) & PRIVILEGES
    for userid, enable, expire in User.objects.using("cluster").values_list("userid", "enable", "expire"):
        state.users[userid] = (enable, expire)
    tokens = APIToken.objects.using("cluster").values_list("tokenid", "user_id", "privsep", "expire")
    for tokenid, userid, privsep, expire in tokens:
        state.tokens[tokenid] = TokenInfo(userid, privsep, expire)
    for path, pool in pool_members.memberships():
        state.pool_of[path] = pool
    return state


def state() -> ACLState:
    """The cached snapshot, reloaded when the replicated version (or the set of pool-member providers)
    has moved since it was built."""
    global _cached
    scoped: ACLState | None = getattr(_scope, "state", None) if getattr(_scope, "active", False) else None
    if scoped is not None:
        return scoped
    version = (current_version(), pool_members.generation())
    with _lock:
        if _cached is not None and _cached[0] == version:
            if getattr(_scope, "active", False):
                _scope.state = _cached[1]
            return _cached[1]
    fresh = load_state()
    with _lock:
        _cached = (version, fresh)
    if getattr(_scope, "active", False):
        _scope.state = fresh
    return fresh
