"""Active Directory realms against a real Samba domain controller: LDAPS, sync, logins, groups."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import GroupMember, Realm, User
from tests.authz.samba_dc import ADDRESS, ADMIN_PASSWORD, DOMAIN, SambaDC
from tests.harness import manage

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    server = SambaDC(tmp_path_factory.mktemp("samba"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ad(dc, node_env):
    if not Realm.objects.filter(realm="ad").exists():
        manage(
            node_env,
            "pveum", "realm", "add", "ad", "--type", "ad", "--domain", DOMAIN, "--server1", ADDRESS,
            "--mode", "ldaps", "--capath", str(dc.ca), "--bind_dn", f"Administrator@{DOMAIN}",
            "--password", ADMIN_PASSWORD,
        )  # fmt: skip
    result = manage(node_env, "pveum", "realm", "sync", "ad")
    assert "TASK OK" in result.stdout, result.stdout + result.stderr
    return "ad"


def login(username: str, password: str) -> int:
    return Client().post(f"{API}/access/ticket", {"username": username, "password": password}).status_code


def test_sync_finds_users_by_samaccountname_and_groups_from_membership(ad):
    users = set(User.objects.filter(realm_id="ad").values_list("userid", flat=True))
    assert {"olga@ad", "pavel@ad", "Administrator@ad"} <= users
    assert not any(u.endswith("$@ad") for u in users)  # no computer accounts
    assert User.objects.get(userid="olga@ad").email == f"olga@{DOMAIN}"
    assert set(GroupMember.objects.filter(group_id="adops-ad").values_list("user_id", flat=True)) == {"olga@ad"}


def test_ad_logins_over_ldaps(ad):
    assert login("olga@ad", "Olga-Passw0rd!") == 200
    assert login("olga@ad", "wrong-password") == 401
    assert login("pavel@ad", "Olga-Passw0rd!") == 401
    assert login("nobody@ad", "x") == 401


def test_plain_ldap_is_refused_by_the_dc_and_a_wrong_ca_by_us(ad, dc):
    root = User.objects.get(userid="root@pam")
    saved = dict(Realm.objects.get(realm="ad").options)
    try:
        services.modify_realm("ad", actor=root, options={"mode": "ldap"})  # AD refuses simple binds without TLS
        assert login("olga@ad", "Olga-Passw0rd!") == 401
        # not the DC's CA
        services.modify_realm("ad", actor=root, options={**saved, "capath": "/etc/ssl/certs/ca-certificates.crt"})
        assert login("olga@ad", "Olga-Passw0rd!") == 401
    finally:
        services.modify_realm("ad", actor=root, options=saved)
    assert login("olga@ad", "Olga-Passw0rd!") == 200
