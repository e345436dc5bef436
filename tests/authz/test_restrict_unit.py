"""``authz.restrict.permitted_keys`` against the resolver itself, on random ACL states.

For every object of a collection, "permitted by the restricted query" must equal "the resolver
grants the privileges on its path": whatever the grants (root, collection, object, group, pool,
NoAccess, propagation, tokens with and without privilege separation, disabled users).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from authz import resolver, restrict
from authz.resolver import ACLState, TokenInfo

KEYS = [str(n) for n in range(100, 130)]
ROLES = ["PVEAuditor", "PVEVMUser", "PVEVMAdmin", "NoAccess", "PVEDatastoreUser"]
PRINCIPALS = ["alice@pve", "bob@pve", "alice@pve!tok", "alice@pve!sep"]


def random_state(rng: random.Random) -> ACLState:
    state = ACLState()
    state.users = {"alice@pve": (True, 0), "bob@pve": (rng.random() > 0.2, 0)}
    state.groups_of = {"alice@pve": {"g1"} if rng.random() > 0.5 else set(), "bob@pve": {"g1", "g2"}}
    state.tokens = {"alice@pve!tok": TokenInfo("alice@pve", False, 0), "alice@pve!sep": TokenInfo("alice@pve", True, 0)}
    paths = ["/", "/vms", "/pool/p1", "/pool/p2", "/storage", *(f"/vms/{k}" for k in rng.sample(KEYS, 8))]
    for _ in range(rng.randint(1, 12)):
        kind, ugid = rng.choice(
            [("user", "alice@pve"), ("user", "bob@pve"), ("group", "g1"), ("group", "g2"), ("token", "alice@pve!sep")]
        )
        state.grant(rng.choice(paths), kind, ugid, rng.choice(ROLES), propagate=rng.random() > 0.3)
    for key in rng.sample(KEYS, 6):
        state.pool_of[f"/vms/{key}"] = rng.choice(["p1", "p2"])
    state.grant("/vms/abc", "user", "alice@pve", "PVEAuditor")  # a path no VM can have
    return state


def actor(principal: str) -> SimpleNamespace:
    return SimpleNamespace(is_authenticated=True, is_active=True, pk=principal.split("!")[0], tokenid=None)


@pytest.mark.parametrize("seed", range(60))
def test_restricted_keys_equal_the_resolvers_answer(monkeypatch, seed):
    rng = random.Random(seed)
    state = random_state(rng)
    monkeypatch.setattr(resolver, "state", lambda: state)
    for principal in PRINCIPALS:
        who = actor(principal)
        if "!" in principal:
            who.tokenid = principal
        for wanted, any_of in (
            (["VM.Audit"], False),
            (["VM.PowerMgmt", "VM.Console"], False),
            (["VM.Audit", "Datastore.Audit"], True),
        ):
            default, exceptions = restrict.permitted_keys(who, "/vms/{vmid}", wanted, any_of=any_of)
            for key in KEYS:
                held = resolver.privileges(state, principal, f"/vms/{key}")
                expected = bool(set(wanted) & held) if any_of else set(wanted) <= held
                assert (default != (key in exceptions)) == expected, (seed, principal, key, wanted)


def test_anonymous_and_inactive_see_nothing(monkeypatch):
    state = ACLState()
    state.grant("/", "user", "alice@pve", "Administrator")
    state.users = {"alice@pve": (True, 0)}
    monkeypatch.setattr(resolver, "state", lambda: state)
    inactive = SimpleNamespace(is_authenticated=True, is_active=False, pk="alice@pve", tokenid=None)
    anonymous = SimpleNamespace(is_authenticated=False, is_active=False, pk=None, tokenid=None)
    assert restrict.permitted_keys(inactive, "/vms/{vmid}", ["VM.Audit"]) == (False, set())
    assert restrict.permitted_keys(anonymous, "/vms/{vmid}", ["VM.Audit"]) == (False, set())
    assert restrict.permitted_keys(actor("alice@pve"), "/vms/{vmid}", ["VM.Audit"]) == (True, set())


def test_a_template_must_end_in_its_field():
    with pytest.raises(ValueError):
        restrict.permitted_keys(actor("alice@pve"), "/vms/{vmid}/config", ["VM.Audit"])
