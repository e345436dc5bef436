"""``authz.ids``: the one place ids are checked and taken apart (pure logic, with hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz import ids


@pytest.mark.parametrize(
    "userid",
    ["root@pam", "alice@pve", "john@example.com@ad", "a=b@pve", "x@corp-1.example", "Ünïcode@pve"],
)
def test_valid_user_ids(userid):
    assert ids.is_valid_userid(userid)
    name, realm = ids.split_userid(userid)
    assert f"{name}@{realm}" == userid and "@" not in realm


@pytest.mark.parametrize(
    "userid",
    [
        "root@pam!a@pve",  # the name of item 1
        "a!b@pve",
        "a,b@pve",
        "a;b@pve",
        "a b@pve",
        "a:b@pve",
        "a/b@pve",
        "a\x00b@pve",
        "a\u202eb@pve",  # a bidi override
        "root@",
        "@pam",
        "root@p",
        "root@1pam",
        "root@pam!tk",
        "x@" + "r" * 63,
        "",
        None,
    ],
)
def test_invalid_user_ids(userid):
    assert not ids.is_valid_userid(userid)
    with pytest.raises(ids.InvalidId, match="invalid user id"):
        ids.split_userid(userid)


def test_token_ids():
    assert ids.split_tokenid("root@pam!monitoring") == ("root@pam", "monitoring")
    assert ids.make_tokenid("a=b@pve", "tk") == "a=b@pve!tk"
    for bad in ("root@pam!a@pve!tk", "root@pam!", "root@pam!1tk", "root@pam!t k", "root!tk", "root@pam", "x!y!z"):
        assert not ids.is_valid_tokenid(bad), bad
    with pytest.raises(ids.InvalidId):
        ids.make_tokenid("root@pam!a@pve", "tk")
    assert ids.split_principal("u@pve!tk") == ("u@pve", "tk") and ids.split_principal("u@pve") == ("u@pve", "")


def test_other_ids_and_logins():
    assert ids.check_group_id("ops-1.x_y") == "ops-1.x_y"
    assert ids.check_pool_id("a/b/c") == "a/b/c"
    for check, bad in (
        (ids.check_group_id, "bad group"),
        (ids.check_role_id, "Role!"),
        (ids.check_pool_id, "a/b/c/d"),
        (ids.check_realm_id, "1realm"),
        (ids.check_realm_id, "r" * 33),
    ):
        with pytest.raises(ids.InvalidId):
            check(bad)
    assert ids.login_userid("alice", "pve") == "alice@pve"
    assert ids.login_userid("alice@corp", "pve") == "alice@corp"  # typed with its realm: that one
    assert ids.login_userid("alice", None) == "alice"


names = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)


@given(names, names, names)
def test_a_string_is_never_both_a_user_id_and_a_token_id(a, b, c):
    for candidate in (f"{a}@{b}", f"{a}@{b}!{c}", f"{a}!{b}@{c}", f"{a}@{b}!{c}@{a}"):
        assert not (ids.is_valid_userid(candidate) and ids.is_valid_tokenid(candidate))
        if ids.is_valid_tokenid(candidate):
            userid, name = ids.split_tokenid(candidate)
            assert ids.make_tokenid(userid, name) == candidate and ids.is_valid_userid(userid)
            assert "!" not in userid and "!" not in name
