"""Live migration's QEMU half (``vms.qemu.migration``) with two real QEMUs on this node: the source's
memory sent over a unix socket to a target started paused with ``-incoming``; a migration that
cannot finish in time is cancelled and the source runs on; plus the pure helpers (parameters,
progress lines, the target's listen lines)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vms.qemu import migration, process, qmp
from vms.runtime_paths import run_dir

SOURCE, TARGET = 7790, 7791
CONFIG = {"name": "migsrc", "memory": "128"}


def quiet(line: str) -> None:
    pass


def test_parameters_take_the_lower_limit_and_default_like_qemu_server():
    assert migration.parameters() == {"downtime-limit": 100, "max-bandwidth": 16 * 1024**3}
    assert migration.parameters(downtime=0.3, migrate_speed=10, bwlimit=2048) == {
        "downtime-limit": 300,
        "max-bandwidth": 2048 * 1024,
    }
    assert migration.parameters(migrate_speed=1, bwlimit=0)["max-bandwidth"] == 1024**2
    assert migration.parameters(downtime=0)["downtime-limit"] == 1  # QEMU's smallest limit
    with pytest.raises(ValueError, match="migration_downtime"):
        migration.parameters(downtime=-0.1)


def test_progress_and_summary_lines_read_as_qemu_server_logs():
    info = {
        "status": "active",
        "ram": {"transferred": 1181116006, "total": 8589934592, "remaining": 1024**3, "mbps": 917.7},
    }
    assert migration.progress_line(info) == (
        "migration active, transferred 1.1 GiB of 8.0 GiB VM-state, 109.4 MiB/s, 1.0 GiB remaining"
    )
    done = {"status": "completed", "total-time": 2000, "downtime": 31, "ram": {"transferred": 200 * 1024**2}}
    assert migration.summary_lines(done) == [
        "average migration speed: 100.0 MiB/s - downtime 31 ms",
        "migration status: completed",
    ]


def test_listen_lines_of_the_target_are_parsed_and_a_missing_address_refused():
    output = (
        "some log line\n"
        "migration listens on unix:/run/qemu-server/100.migrate\n"
        "storage migration listens on nbd:unix:/run/qemu-server/100_nbd.migrate:exportname=drive-scsi0 "
        "volume:local:100/vm-100-disk-0.qcow2\n"
    )
    found = migration.parse_listen_lines(output)
    assert found.uri == "unix:/run/qemu-server/100.migrate"
    assert found.disks == {
        "scsi0": ("nbd:unix:/run/qemu-server/100_nbd.migrate:exportname=drive-scsi0", "local:100/vm-100-disk-0.qcow2")
    }
    with pytest.raises(migration.MigrationError, match="remote migration address"):
        migration.parse_listen_lines("nothing here\n")


def _launch(vmid: int, extra: list[str]) -> None:
    argv = process.command_for(vmid, {**CONFIG, "name": f"mig{vmid}"}) + extra
    process.launch(vmid, argv, timeout=30, log=quiet)


@pytest.fixture
def pair() -> Iterator[str]:
    """A running source (firmware only) and a target listening paused on a unix socket; both ended after."""
    uri = f"unix:{run_dir()}/{TARGET}.migrate"
    try:
        _launch(SOURCE, [])
        _launch(TARGET, migration.incoming_args(uri))
        assert qmp.status(TARGET) == "inmigrate"
        yield uri
    finally:
        for vmid in (SOURCE, TARGET):
            process.terminate(vmid, timeout=5, log=quiet)
            process.cleanup(vmid, {})
        (run_dir() / f"{TARGET}.migrate").unlink(missing_ok=True)


def test_memory_migrates_to_a_paused_target_which_then_runs(pair):
    lines: list[str] = []
    info = migration.migrate(SOURCE, pair, migration.parameters(), log=lines.append, timeout=60)
    assert info["status"] == "completed"
    assert lines[0] == f"start migrate command to {pair}"
    assert lines[-1] == "migration status: completed" and lines[-2].startswith("average migration speed: ")
    assert qmp.status(SOURCE) == "postmigrate"
    assert qmp.status(TARGET) == "paused"  # -S: it runs only once resumed (after the ownership moved)
    qmp.command(TARGET, "cont")
    assert qmp.status(TARGET) == "running"


def test_a_migration_over_its_time_is_cancelled_and_the_source_runs_on(pair):
    lines: list[str] = []
    slow = migration.parameters(bwlimit=64)  # 64 KiB/s: 128 MiB of RAM cannot go in 2 s
    with pytest.raises(migration.MigrationError, match="did not finish within 2 s"):
        migration.migrate(SOURCE, pair, slow, log=lines.append, timeout=2)
    assert any(line.startswith("migration active, transferred ") for line in lines), lines
    assert qmp.command(SOURCE, "query-migrate")["status"] == "cancelled"
    assert qmp.status(SOURCE) == "running"
