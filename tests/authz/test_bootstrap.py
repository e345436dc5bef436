"""First start of a node without PVE_ROOT_PASSWORD: a generated password kept 0600, never in the log.

With no terminal (output redirected to a file, as under systemd) the password is not shown at
all: the log says where the file is. tests/portal/test_private_files.py shows it on a terminal.
"""

from __future__ import annotations

import os
import sqlite3
import stat

from django.contrib.auth.hashers import check_password

from tests.harness import ReplicatorProcess, manage, node_environment


def test_generated_root_password_is_announced_once_and_works(tmp_path):
    data = tmp_path / "fresh"
    data.mkdir()
    env = node_environment(data, node="freshnode")
    env["PVE_ROOT_PASSWORD"] = ""
    manage(env, "migrate", "-v0")
    manage(env, "migrate", "--database", "cluster", "-v0")
    process = ReplicatorProcess(env)
    process.start()
    process.stop()
    password_file = data / "initial-root-password"
    password = password_file.read_text().strip()
    assert len(password) >= 12
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    logged = process.log_path.read_text()
    assert password not in logged
    assert logged.count(f"generated a password for root@pam: it is in {password_file}") == 1
    with sqlite3.connect(data / "cluster.db") as db:
        stored = db.execute("SELECT password FROM authz_user WHERE userid = 'root@pam'").fetchone()[0]
    assert stored.startswith("pbkdf2_sha256$") and check_password(password, stored)

    process.start()  # a second start neither regenerates nor prints it again
    process.stop()
    assert password_file.read_text().strip() == password
    assert process.log_path.read_text().count("generated a password for root@pam") == 1
