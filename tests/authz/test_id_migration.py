"""Issue 9 item 1: upgrading over a database that holds a user id with ``!`` stops with a clear message."""

from __future__ import annotations

import sqlite3

from tests.harness import manage, node_environment


def applied(database, name: str) -> bool:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT 1 FROM django_migrations WHERE app = 'authz' AND name = ?", (name,)).fetchone()
    return row is not None


def test_the_migration_refuses_ambiguous_rows_and_names_them(tmp_path):
    env = node_environment(tmp_path, node="oldnode")
    manage(env, "migrate", "-v0")
    manage(env, "migrate", "--database", "cluster", "authz", "0004", "-v0")
    database = tmp_path / "cluster.db"
    with sqlite3.connect(database) as db:  # rows as an older version could write them
        db.execute("INSERT INTO authz_realm (realm, type, comment, \"default\", options, version) "
                   "VALUES ('pve', 'pve', '', 1, '{}', 1), ('pam', 'ldap', '', 0, '{}', 1)")  # fmt: skip
        for userid in ("root@pam!a@pve", "fine@pve"):
            db.execute(
                "INSERT INTO authz_user (userid, realm_id, password, enable, expire, firstname, lastname, email, "
                "comment, keys, version) VALUES (?, 'pve', '', 1, 0, '', '', '', '', '', 1)",
                (userid,),
            )
        db.execute(
            "INSERT INTO authz_apitoken (tokenid, user_id, expire, privsep, comment, secret_hash, version) "
            "VALUES ('root@pam!x', 'fine@pve', 0, 0, '', '', 1)"
        )
    result = manage(env, "migrate", "--database", "cluster", "-v0", check=False)
    assert result.returncode != 0
    assert "user 'root@pam!a@pve'" in result.stderr
    assert "API token 'root@pam!x' of user 'fine@pve'" in result.stderr
    assert "realm 'pam' of type 'ldap'" in result.stderr
    assert "fine@pve'" not in result.stderr.replace("of user 'fine@pve'", "")
    assert "Traceback" not in result.stderr  # a message for the operator, not a crash
    assert not applied(database, "0005_refuse_ambiguous_ids")

    with sqlite3.connect(database) as db:  # what the operator does with the previous version
        db.execute("DELETE FROM authz_apitoken")
        db.execute("DELETE FROM authz_user WHERE userid = 'root@pam!a@pve'")
        db.execute("UPDATE authz_realm SET type = 'pam' WHERE realm = 'pam'")
    manage(env, "migrate", "--database", "cluster", "-v0")
    assert applied(database, "0005_refuse_ambiguous_ids")
