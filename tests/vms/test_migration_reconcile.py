"""The decision rule of the migration reconciler (vms.qemu.migration_reconcile): pure, no QEMU."""

from __future__ import annotations

import pytest

from vms.qemu.migration_reconcile import Action, Seen, decide, needs_status

NODE = "node1"


@pytest.mark.parametrize(
    ("seen", "action"),
    [
        # the migration is live (the migrate lock is held): nothing is touched, on either node
        (Seen(100, "node2", "migrate", incoming=True, status="inmigrate"), Action.KEEP),
        (Seen(100, "node2", "migrate", incoming=False, status="running"), Action.KEEP),
        (Seen(100, NODE, "migrate", incoming=True, status="paused"), Action.KEEP),
        # no such VM: not a migration's business
        (Seen(100, None, "", incoming=True, status="paused"), Action.KEEP),
        # target's leftover: the ownership never moved here (source crashed before the change)
        (Seen(100, "node2", "", incoming=True, status="inmigrate"), Action.STOP),
        (Seen(100, "node2", "", incoming=True, status="paused"), Action.STOP),
        # source's QEMU of a VM that moved (source crashed after the change)
        (Seen(100, "node2", "", incoming=False, status="running"), Action.STOP),
        (Seen(100, "node2", "backup", incoming=False, status="running"), Action.STOP),
        # the VM moved here but the target was never resumed
        (Seen(100, NODE, "", incoming=True, status="paused"), Action.RESUME),
        # ... unless someone paused it with qm suspend since, or it is still loading
        (Seen(100, NODE, "", incoming=True, status="paused", paused_by_user=True), Action.KEEP),
        (Seen(100, NODE, "", incoming=True, status="inmigrate"), Action.KEEP),
        # the source's task died while sending or after sending without moving the ownership
        (Seen(100, NODE, "", incoming=False, status="running", migration="active"), Action.CANCEL),
        (Seen(100, NODE, "", incoming=False, status="postmigrate", migration="completed"), Action.CANCEL),
        (Seen(100, NODE, "migrate", incoming=False, status="postmigrate", migration="completed"), Action.KEEP),
        # a VM migrated in earlier and running, whose last outgoing try is over
        (Seen(100, NODE, "", incoming=True, status="running", migration="cancelled"), Action.KEEP),
        # an ordinary VM of this node, running or paused
        (Seen(100, NODE, "", incoming=False, status="paused"), Action.KEEP),
        (Seen(100, NODE, "", incoming=True, status="running"), Action.KEEP),
    ],
)
def test_decide(seen, action):
    assert decide(seen, NODE) is action


def test_qmp_is_asked_only_for_an_owned_unlocked_qemu():
    assert needs_status(Seen(100, NODE, "", incoming=True), NODE)
    assert needs_status(Seen(100, NODE, "", incoming=False), NODE)
    assert not needs_status(Seen(100, NODE, "migrate", incoming=True), NODE)
    assert not needs_status(Seen(100, "node2", "", incoming=True), NODE)
    assert not needs_status(Seen(100, None, "", incoming=True), NODE)


def test_only_a_migration_target_counts_as_started_incoming(monkeypatch):
    """A start from a saved state (``-incoming exec:cat``, hibernation, snapshot rollback) is no migration."""
    import subprocess
    import sys

    from vms.qemu import migration_reconcile

    for value, expected in (("unix:/run/100.migrate", True), ("tcp:10.0.0.1:60000", True), ("exec:cat /s", False)):
        script = "import time; print('up', flush=True); time.sleep(30)"
        child = subprocess.Popen([sys.executable, "-c", script, "-incoming", value], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "up\n"  # its argv is in place
            monkeypatch.setattr(migration_reconcile, "vm_pid", lambda vmid, pid=child.pid: pid)
            assert migration_reconcile._started_incoming(100) is expected, value
        finally:
            child.kill()
            child.wait()
