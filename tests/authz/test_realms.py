"""Issue 9 item 4: a realm's type never changes, and root@pam never authenticates through a realm row.

Against a real slapd holding a ``root`` entry with a password of the attacker's choosing: were
root@pam ever checked against a directory, that password would log in as root@pam.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from authz import services
from authz.exceptions import AccessError
from authz.models import ACLEntry, KeyMaterial, Realm, Role, User
from authz.services import realms
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client
from tests.authz.slapd import ADMIN_DN, ADMIN_PASSWORD, SUFFIX, Slapd
from tests.harness import manage

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
API = "/api2/json"
ROOT_PASSWORD = "test-root-password"
LDAP_ROOT_PASSWORD = "the-attackers-own-password"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = Slapd(tmp_path_factory.mktemp("slapd-realms"))
    server.start()
    server.add_person("root", LDAP_ROOT_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


def version() -> int:
    return replicator_client.status()["version"]


def login(username: str, password: str) -> int:
    return Client().post(f"{API}/access/ticket", {"username": username, "password": password}).status_code


def ldap_options(server: Slapd) -> dict[str, str]:
    return {
        "server1": "127.0.0.1",
        "port": str(server.port),
        "base_dn": f"ou=people,{SUFFIX}",
        "user_attr": "uid",
    }


@pytest.fixture(scope="module")
def realm_admin(root):
    """A user holding Realm.Allocate on /access/realm (a custom role: it is in no built-in role but Administrator)."""
    if not Role.objects.filter(roleid="RealmKeeper").exists():
        services.save_role("RealmKeeper", ["Realm.Allocate", "Sys.Audit"], actor=root, create=True)
    if not User.objects.filter(userid="realm-keeper@pve").exists():
        services.add_user("realm-keeper@pve", actor=root, password="keeper-password")
    for entry in ACLEntry.objects.filter(ugid="realm-keeper@pve"):
        entry.delete()
    services.modify_acl(root, "/access/realm", ["RealmKeeper"], users=["realm-keeper@pve"])
    client = Client()
    response = client.post("/admin/login/", {"username": "realm-keeper@pve", "password": "keeper-password"})
    assert response.status_code == 302
    return client


def test_the_pam_realm_cannot_be_made_an_ldap_realm_in_the_admin(slapd, realm_admin):
    before = Realm.objects.get(realm="pam")
    snapshot = version()
    response = realm_admin.post(
        "/admin/authz/realm/pam/change/",
        {
            "realm": "pam",  # read-only now; an editable field of the old form
            "type": "ldap",
            "comment": before.comment,
            "options": json.dumps(ldap_options(slapd)),
            "_loaded_version": str(before.version),
        },
    )
    assert response.status_code == 302
    after = Realm.objects.get(realm="pam")
    assert (after.type, after.options, after.version) == ("pam", before.options, before.version)
    assert version() == snapshot
    assert login("root@pam", LDAP_ROOT_PASSWORD) == 401
    assert login("root@pam", ROOT_PASSWORD) == 200


def test_realm_types_are_fixed_and_the_builtin_realms_stay(root, slapd):
    snapshot = version()
    refused = [
        (lambda: services.modify_realm("pam", actor=root, realm_type="ldap"), "cannot be changed"),
        (lambda: services.modify_realm("pve", actor=root, options=ldap_options(slapd)), "not allowed"),
        (lambda: services.add_realm("pam", "ldap", actor=root, options=ldap_options(slapd)), "reserved name"),
        (lambda: services.add_realm("shadowpam", "pam", actor=root), "only ldap or ad"),
        (lambda: services.add_realm("shadowpve", "pve", actor=root), "only ldap or ad"),
        (lambda: services.delete_realm("pam", actor=root), "built-in realm"),
        (lambda: services.delete_realm("pve", actor=root), "built-in realm"),
        (lambda: services.add_realm("bad", "ldap", actor=root, options={"server1": "x"}), "'base_dn' is required"),
        (
            lambda: services.add_realm("bad", "ldap", actor=root, options={**ldap_options(slapd), "filter": "a\nb"}),
            "invalid value for filter",
        ),
        (
            lambda: services.add_realm("bad", "ldap", actor=root, options={**ldap_options(slapd), "capath": "ca.pem"}),
            "invalid value for capath",
        ),
        (lambda: services.add_realm("bad", "ldap", actor=root, comment="x\nldap: evil"), "invalid value for comment"),
    ]
    for attempt, message in refused:
        with pytest.raises(AccessError, match=message):
            attempt()
    assert version() == snapshot
    assert Realm.objects.get(realm="pam").type == "pam" and Realm.objects.get(realm="pve").type == "pve"


def test_pveum_refuses_removing_the_builtin_realms(node_env):
    snapshot = version()
    result = manage(node_env, "pveum", "realm", "delete", "pam", check=False)
    assert result.returncode != 0 and "built-in realm 'pam'" in result.stderr
    assert version() == snapshot


def test_root_never_authenticates_through_a_realm_row_even_a_tampered_one(slapd):
    """A ``pam`` row retyped by an older version (written here straight through the model)."""
    pam = Realm.objects.get(realm="pam")
    saved = (pam.type, dict(pam.options))
    pam.type, pam.options = "ldap", ldap_options(slapd)
    pam.save()  # what a previous version let Realm.Allocate do
    try:
        assert login("root@pam", LDAP_ROOT_PASSWORD) == 401
        assert login("root", LDAP_ROOT_PASSWORD) == 401  # realm chosen by default, nothing else
        assert login("root@pam", ROOT_PASSWORD) == 200
    finally:
        pam = Realm.objects.get(realm="pam")
        pam.type, pam.options = saved
        pam.save()


def test_realm_changes_are_audited_in_their_change_set_with_the_bind_password_apart(root, slapd):
    if Realm.objects.filter(realm="audited").exists():
        services.delete_realm("audited", actor=root)
    options = {**ldap_options(slapd), "bind_dn": ADMIN_DN}
    services.add_realm("audited", "ldap", actor=root, options=options, password=ADMIN_PASSWORD)
    row = Realm.objects.get(realm="audited")
    assert ClusterLogEntry.objects.filter(version=row.version, user="root@pam", msg__startswith="added realm").exists()
    assert KeyMaterial.objects.get(path=realms.password_path("audited")).version == row.version
    assert ADMIN_PASSWORD not in str(row.options)
    services.modify_realm("audited", actor=root, default=True)
    assert Realm.objects.get(realm="audited").default and not Realm.objects.get(realm="pve").default
    services.modify_realm("pve", actor=root, default=True)
    services.delete_realm("audited", actor=root)
    assert not KeyMaterial.objects.filter(path=realms.password_path("audited")).exists()
    assert Realm.objects.get(realm="pve").default
