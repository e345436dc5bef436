"""The permission resolver against a straightforward reference of PVE-INTERNALS §6.6 (hypothesis).

The reference works on a flat list of ACL entries, written from the specification's text
rather than from the resolver's tree, so the two are independent readings of the same rules.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.privileges import BUILTIN_ROLES, PRIVILEGES, InvalidPath, check_path
from authz.resolver import ACLState, TokenInfo, privileges

# "root@pam!a@pve" is a user of realm pve that new code refuses to create (authz.ids) but an old
# database may hold: its token must resolve to it, never to root@pam.
USERS = ["alice@pve", "bob@pve", "carol@pam", "root@pam!a@pve"]
TOKEN_OWNERS = {"alice@pve!ci": "alice@pve", "bob@pve!ro": "bob@pve", "root@pam!a@pve!tk": "root@pam!a@pve"}
TOKENS = sorted(TOKEN_OWNERS)
GROUPS = ["admins", "ops", "devs"]
ROLES = ["Administrator", "NoAccess", "PVEVMUser", "PVEAuditor", "PVEDatastoreUser", "PVEVMAdmin", "Custom"]
PATHS = ["/", "/vms", "/vms/100", "/vms/101", "/storage", "/storage/local", "/pool", "/pool/a", "/pool/a/b", "/nodes"]
CUSTOM = frozenset({"VM.Audit", "Datastore.Audit", "Sys.Audit"})


def reference(entries, members, pools, users, tokens, principal, path, now=1000.0):
    """§6.6 read literally: entries are (path, kind, ugid, role, propagate)."""
    roles_table = {**BUILTIN_ROLES, "Custom": CUSTOM}

    def walk(who, target):
        parts = [p for p in target.split("/") if p]
        levels = ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        current = set()
        for level in levels:
            final = level == target
            here = [e for e in entries if e[0] == level and (final or e[4])]
            if who in TOKEN_OWNERS:
                mine = {e[3] for e in here if e[1] == "token" and e[2] == who}
                if mine:
                    current = mine
                continue
            mine = {e[3] for e in here if e[1] == "user" and e[2] == who}
            if mine:
                current = mine
                continue
            theirs = {e[3] for e in here if e[1] == "group" and who in members.get(e[2], ())}
            if theirs:
                current = theirs
        return {"NoAccess"} if "NoAccess" in current else current

    def resolved(who, target):
        got = walk(who, target)
        pool = pools.get(target)
        if pool is not None and "NoAccess" not in got:
            pooled = walk(who, f"/pool/{pool}")
            got = {"NoAccess"} if "NoAccess" in pooled else got | pooled
        out = set()
        for role in got:
            out |= roles_table[role]
        return out

    if principal == "root@pam":
        return set(PRIVILEGES)
    user = TOKEN_OWNERS.get(principal, principal)
    enable, expire = users.get(user, (False, 0))
    if not enable or (expire and expire <= now):
        return set()
    if principal not in TOKEN_OWNERS:
        return resolved(principal, path)
    if principal not in tokens:
        return set()
    privsep, token_expire = tokens[principal]
    if token_expire and token_expire <= now:
        return set()
    mine = resolved(user, path)
    return resolved(principal, path) & mine if privsep else mine


grant_key = st.one_of(
    st.tuples(st.sampled_from(PATHS), st.just("user"), st.sampled_from(USERS), st.sampled_from(ROLES)),
    st.tuples(st.sampled_from(PATHS), st.just("group"), st.sampled_from(GROUPS), st.sampled_from(ROLES)),
    st.tuples(st.sampled_from(PATHS), st.just("token"), st.sampled_from(TOKENS), st.sampled_from(ROLES)),
)
# one propagate flag per (path, kind, ugid, role), as in Proxmox's ACL tree
entries = st.dictionaries(grant_key, st.booleans(), max_size=14).map(
    lambda grants: [(*key, propagate) for key, propagate in grants.items()]
)
world = st.fixed_dictionaries(
    {
        "entries": entries,
        "members": st.fixed_dictionaries({g: st.sets(st.sampled_from(USERS)) for g in GROUPS}),
        "pools": st.dictionaries(
            st.sampled_from(["/vms/100", "/vms/101", "/storage/local"]), st.sampled_from(["a", "a/b"]), max_size=3
        ),
        # mostly enabled, unexpired users and tokens, so that the ACL rules decide most cases
        "users": st.fixed_dictionaries(
            {
                u: st.tuples(st.sampled_from([True, True, True, False]), st.sampled_from([0, 0, 0, 500, 5000]))
                for u in USERS
            }
        ),
        "tokens": st.fixed_dictionaries(
            {t: st.tuples(st.booleans(), st.sampled_from([0, 0, 0, 500, 5000])) for t in TOKENS}
        ),
    }
)


def build(w) -> ACLState:
    state = ACLState()
    state.roles["Custom"] = CUSTOM
    for path, kind, ugid, role, propagate in w["entries"]:
        state.grant(path, kind, ugid, role, propagate)
    for group, users in w["members"].items():
        for user in users:
            state.groups_of.setdefault(user, set()).add(group)
    state.pool_of.update(w["pools"])
    state.users.update({**w["users"], "root@pam": (True, 0)})  # root@pam always exists
    state.tokens.update({t: TokenInfo(TOKEN_OWNERS[t], *info) for t, info in w["tokens"].items()})
    return state


@settings(max_examples=1500, deadline=None)
@given(world, st.sampled_from(USERS + TOKENS + ["root@pam"]), st.sampled_from(PATHS))
def test_resolver_matches_the_reference(w, principal, path):
    assert privileges(build(w), principal, path, now=1000.0) == reference(
        w["entries"], w["members"], w["pools"], w["users"], w["tokens"], principal, path
    )


def test_worked_examples():
    state = ACLState()
    state.users.update({"alice@pve": (True, 0), "bob@pve": (True, 0)})
    state.groups_of["alice@pve"] = {"admins"}
    state.grant("/", "group", "admins", "PVEAdmin")
    state.grant("/vms/100", "user", "alice@pve", "NoAccess", False)
    assert "VM.Allocate" in privileges(state, "alice@pve", "/vms/101")
    assert privileges(state, "alice@pve", "/vms/100") == set()  # user entry overrides the group
    state.grant("/vms", "user", "bob@pve", "PVEVMUser", False)  # not propagated
    assert privileges(state, "bob@pve", "/vms") == BUILTIN_ROLES["PVEVMUser"]
    assert privileges(state, "bob@pve", "/vms/100") == set()
    # privilege-separated token: never more than its user
    state.tokens["bob@pve!ci"] = TokenInfo("bob@pve", True, 0)
    state.grant("/", "token", "bob@pve!ci", "Administrator")
    assert privileges(state, "bob@pve!ci", "/vms") == BUILTIN_ROLES["PVEVMUser"]
    state.tokens["bob@pve!ci"] = TokenInfo("bob@pve", False, 0)
    assert privileges(state, "bob@pve!ci", "/vms") == BUILTIN_ROLES["PVEVMUser"]
    # pools: roles on the pool reach its members, a pool NoAccess wins
    state.pool_of["/vms/200"] = "dev"
    state.grant("/pool/dev", "user", "bob@pve", "PVEVMAdmin")
    assert "VM.Allocate" in privileges(state, "bob@pve", "/vms/200")
    state.grant("/pool/dev", "user", "bob@pve", "NoAccess")  # a pool NoAccess replaces the regular roles
    state.grant("/vms/200", "user", "bob@pve", "PVEVMUser")
    assert privileges(state, "bob@pve", "/vms/200") == set()
    state.acl["/pool/dev"]["user"]["bob@pve"] = {"PVEAuditor": True}
    state.grant("/vms/200", "user", "bob@pve", "NoAccess")  # a regular NoAccess wins over the pool's
    assert privileges(state, "bob@pve", "/vms/200") == set()
    # disabled users and expired ones hold nothing
    state.users["bob@pve"] = (False, 0)
    assert privileges(state, "bob@pve", "/vms/200") == set()
    assert privileges(state, "root@pam", "/anything") == set(PRIVILEGES)


def test_a_token_is_its_rows_user_never_a_prefix_of_its_id():
    """Issue 9 item 1: the token of user ``root@pam!a@pve`` once resolved as root@pam (split at the first ``!``)."""
    state = ACLState()
    state.users.update({"root@pam": (True, 0), "root@pam!a@pve": (True, 0)})
    state.tokens["root@pam!a@pve!tk"] = TokenInfo("root@pam!a@pve", False, 0)
    assert privileges(state, "root@pam!a@pve!tk", "/") == set()
    state.grant("/vms", "user", "root@pam!a@pve", "PVEAuditor")
    assert privileges(state, "root@pam!a@pve!tk", "/vms/100") == BUILTIN_ROLES["PVEAuditor"]
    # whatever the id says, the owner is the row's user
    state.users["mallory@pve"] = (True, 0)
    state.tokens["root@pam!x"] = TokenInfo("mallory@pve", False, 0)
    assert privileges(state, "root@pam!x", "/") == set()
    assert privileges(state, "root@pam!unknown", "/") == set()  # no row: nothing


def test_acl_paths_are_validated_never_defaulted():
    assert check_path("//vms//100/") == "/vms/100"
    for good in ["/", "/access/groups/admins", "/pool/a/b/c", "/storage/local", "/sdn/zones/z/v/42", "/mapping/pci/x"]:
        assert check_path(good)
    for bad in ["/vms/99", "/vms/abc", "/pool/a/b/c/d", "/nodes/a/b", "/foo", "/vms/100;rm", "/sdn/zones/z/v/0", ""]:
        try:
            result = check_path(bad)
        except InvalidPath:
            continue
        raise AssertionError(f"{bad!r} accepted as {result!r}")
