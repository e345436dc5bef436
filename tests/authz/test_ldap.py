"""LDAP realms against a real OpenLDAP slapd: login, realm sync, TLS verification, timeouts, escaping."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from authz import services
from authz.models import Group, GroupMember, Realm, User
from tests.authz.slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Slapd
from tests.harness import manage

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    yield server
    server.stop()


def pveum(node_env, *args: str, check: bool = True):
    return manage(node_env, "pveum", *args, check=check)


def add_realm(node_env, name: str, server: Slapd, *extra: str) -> None:
    if Realm.objects.filter(realm=name).exists():
        return
    pveum(
        node_env,
        "realm", "add", name, "--type", "ldap", "--server1", "127.0.0.1", "--port", str(server.port),
        "--base_dn", f"ou=people,{SUFFIX}", "--user_attr", "uid", "--bind_dn", ADMIN_DN,
        "--password", ADMIN_PASSWORD, "--group_dn", f"ou=groups,{SUFFIX}", *extra,
    )  # fmt: skip


def login(username: str, password: str) -> int:
    return Client().post(f"{API}/access/ticket", {"username": username, "password": password}).status_code


@pytest.fixture(scope="module")
def corp(slapd, node_env):
    add_realm(node_env, "corp", slapd)
    result = pveum(node_env, "realm", "sync", "corp")
    assert "TASK OK" in result.stdout, result.stdout + result.stderr
    return "corp"


def test_realm_sync_creates_users_and_groups(corp, etc_dir):
    assert {u.userid for u in User.objects.filter(realm_id="corp")} == {"lara@corp", "mike@corp", "nina@corp"}
    assert User.objects.get(userid="lara@corp").email == "lara@example.org"
    members = set(GroupMember.objects.filter(group_id="devs-corp").values_list("user_id", flat=True))
    assert members == {"lara@corp", "mike@corp"}
    assert Group.objects.filter(groupid="ops-corp").exists()
    # the bind password is key material under priv/, never in domains.cfg
    from replicator import client

    client.wait_mirror(client.status()["version"])
    assert ADMIN_PASSWORD not in (etc_dir / "domains.cfg").read_text()
    assert (etc_dir / "priv" / "realm" / "corp.pw").stat().st_mode & 0o777 == 0o600


def test_ldap_login_right_wrong_unknown_and_injection(corp):
    assert login("lara@corp", "lara-pass") == 200
    assert login("lara@corp", "wrong") == 401
    assert login("lara@corp", "") in (400, 401)
    assert login("zoe@corp", "anything") == 401  # not in the directory, not a user
    assert login("*@corp", "lara-pass") == 401
    assert login("lara)(uid=*@corp", "lara-pass") in (400, 401)


def test_vanished_users_are_removed_on_request(corp, node_env, slapd):
    import subprocess

    subprocess.run(
        ["ldapdelete", "-x", "-H", f"ldap://127.0.0.1:{slapd.port}", "-D", ADMIN_DN, "-w", ADMIN_PASSWORD,
         f"uid=nina,ou=people,{SUFFIX}"],
        check=True, capture_output=True,
    )  # fmt: skip
    pveum(node_env, "realm", "sync", "corp")
    assert User.objects.filter(userid="nina@corp").exists()  # kept without --remove-vanished
    pveum(node_env, "realm", "sync", "corp", "--remove-vanished")
    assert not User.objects.filter(userid="nina@corp").exists()


def test_ldaps_verifies_the_server_certificate(slapd, node_env):
    add_realm(node_env, "corptls", slapd, "--mode", "ldaps", "--capath", str(slapd.ca))
    pveum(node_env, "realm", "modify", "corptls", "--port", str(slapd.tls_port))
    assert "TASK OK" in pveum(node_env, "realm", "sync", "corptls", "--scope", "users").stdout
    assert login("lara@corptls", "lara-pass") == 200
    pveum(node_env, "realm", "modify", "corptls", "--capath", str(slapd.other_ca))  # a CA that did not sign it
    assert login("lara@corptls", "lara-pass") == 401
    failed = pveum(node_env, "realm", "sync", "corptls", check=False)
    assert failed.returncode != 0 and "realm sync" in (failed.stdout + failed.stderr)


def test_an_unreachable_server_fails_within_a_bounded_time(slapd, node_env, corp):
    root = User.objects.get(userid="root@pam")
    saved = dict(Realm.objects.get(realm="corp").options)
    # the first server never answers
    services.modify_realm("corp", actor=root, options={"server1": "10.255.255.1", "server2": "127.0.0.1"})
    try:
        started = time.monotonic()
        assert login("lara@corp", "lara-pass") == 200  # the second server answers
        assert time.monotonic() - started < 30
        services.modify_realm("corp", actor=root, delete=["server2"])
        started = time.monotonic()
        assert login("lara@corp", "lara-pass") == 401
        assert time.monotonic() - started < 30
    finally:
        services.modify_realm("corp", actor=root, options=saved)


def test_directory_names_that_are_no_user_ids_are_skipped(corp, node_env, slapd):
    """Issue 9 item 1: a directory entry named ``x!y`` would make the user id ``x!y@corp``."""
    slapd.add_person("root@pam!a", "bang-pass")
    slapd.add_person("eve!tk", "bang-pass")
    result = pveum(node_env, "realm", "sync", "corp")
    assert "TASK OK" in result.stdout
    assert "skipped directory user 'root@pam!a'" in result.stdout
    assert "skipped directory user 'eve!tk'" in result.stdout
    assert not User.objects.filter(userid__contains="!").exists()
    assert login("root@pam!a@corp", "bang-pass") == 401


def test_realms_through_the_api_create_read_sync_change_remove(slapd):
    """``/access/domains[/{realm}[/sync]]`` as root@pam, and refused for a user without Realm.Allocate."""
    from tests.api_client import finished_task, logged_in, users_with_grants

    users_with_grants(("rl-nobody@pve",), "realm-api-password", [])
    nobody, root = logged_in("rl-nobody@pve", "realm-api-password"), logged_in()
    realm = {
        "realm": "apicorp", "type": "ldap", "server1": "127.0.0.1", "port": str(slapd.port),
        "base_dn": f"ou=people,{SUFFIX}", "user_attr": "uid", "bind_dn": ADMIN_DN, "password": ADMIN_PASSWORD,
        "group_dn": f"ou=groups,{SUFFIX}", "comment": "from the API",
    }  # fmt: skip
    assert Client().post(f"{API}/access/domains", realm).status_code == 401
    refused = nobody.post(f"{API}/access/domains", realm)
    assert refused.status_code == 403 and not Realm.objects.filter(realm="apicorp").exists(), refused.content
    bad = root.post(f"{API}/access/domains", {**realm, "port": "99999"})
    assert bad.status_code == 400 and not Realm.objects.filter(realm="apicorp").exists(), bad.content
    assert root.post(f"{API}/access/domains", {**realm, "frobnicate": "1"}).status_code == 400
    assert root.post(f"{API}/access/domains", realm).status_code == 200, "created"

    assert nobody.get(f"{API}/access/domains/apicorp").status_code == 403
    shown = root.get(f"{API}/access/domains/apicorp").json()["data"]
    assert shown["type"] == "ldap" and shown["comment"] == "from the API" and shown["port"] == str(slapd.port)
    assert ADMIN_PASSWORD not in str(shown)

    assert nobody.post(f"{API}/access/domains/apicorp/sync").status_code == 403
    upid = root.post(f"{API}/access/domains/apicorp/sync", {"scope": "both"}).json()["data"]
    assert ":auth-realm-sync:apicorp:root@pam:" in upid and finished_task(upid).exitstatus == "OK"
    synced = {u.userid for u in User.objects.filter(realm_id="apicorp")}
    assert {"lara@apicorp", "mike@apicorp"} <= synced  # (earlier tests of this module remove others)

    changed = root.put(f"{API}/access/domains/apicorp", "comment=changed&delete=group_dn",
                       content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert changed.status_code == 200, changed.content
    after = Realm.objects.get(realm="apicorp")
    assert after.comment == "changed" and "group_dn" not in after.options
    busy = root.delete(f"{API}/access/domains/apicorp")
    assert busy.status_code == 400 and "still has users" in busy.json()["message"]
    for user in User.objects.filter(realm_id="apicorp"):
        services.delete_user(user.userid, actor=User.objects.get(userid="root@pam"))
    assert root.delete(f"{API}/access/domains/apicorp").status_code == 200
    assert not Realm.objects.filter(realm="apicorp").exists()
