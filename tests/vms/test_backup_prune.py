"""Backup retention: pve-storage's marking rules, then pruning on a real storage after a vzdump run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from authz.models import User
from vms import services
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.models import VM
from vms.services.backup import prune, vzdump
from vms.storage import volumes

pytestmark = [pytest.mark.usefixtures("replicator")]
OWNER = "UPID:testnode:00000001:00000001:00000001:vzdump::root@pam:"


def at(text: str) -> int:
    return int(time.mktime(time.strptime(text, "%Y-%m-%d %H:%M")))


def marks(entries: list[prune.Entry], keep: str) -> dict[str, str]:
    return {e.volid: str(e.mark) for e in prune.mark(entries, prune.parse_keep(keep))}


def group(*times: str, protected: tuple[str, ...] = ()) -> list[prune.Entry]:
    return [prune.Entry(t, at(t), t in protected) for t in times]


def test_keep_last_keeps_the_newest():
    entries = group("2024-05-01 02:00", "2024-05-02 02:00", "2024-05-03 02:00")
    assert marks(entries, "keep-last=2") == {
        "2024-05-03 02:00": "keep",
        "2024-05-02 02:00": "keep",
        "2024-05-01 02:00": "remove",
    }


def test_daily_keeps_the_newest_of_each_day_and_later_rules_skip_covered_buckets():
    entries = group("2024-05-01 01:00", "2024-05-01 23:00", "2024-05-02 08:00", "2024-05-02 09:00", "2024-04-10 02:00")
    assert marks(entries, "keep-daily=2") == {
        "2024-05-02 09:00": "keep",
        "2024-05-02 08:00": "remove",
        "2024-05-01 23:00": "keep",
        "2024-05-01 01:00": "remove",
        "2024-04-10 02:00": "remove",
    }
    # keep-last=1 takes 05-02 09:00; daily then skips that day and keeps 05-01 and 04-10;
    # monthly skips May (kept already) and April (kept by daily).
    assert marks(entries, "keep-last=1,keep-daily=2,keep-monthly=2") == {
        "2024-05-02 09:00": "keep",
        "2024-05-02 08:00": "remove",
        "2024-05-01 23:00": "keep",
        "2024-05-01 01:00": "remove",
        "2024-04-10 02:00": "keep",
    }


def test_weekly_uses_iso_weeks_and_yearly_years():
    # 2024-12-30 (Mon) is ISO week 2025-W01, 2024-12-29 (Sun) is 2024-W52.
    entries = group("2024-12-29 10:00", "2024-12-30 10:00", "2024-12-31 10:00")
    assert marks(entries, "keep-weekly=5") == {
        "2024-12-31 10:00": "keep",
        "2024-12-30 10:00": "remove",
        "2024-12-29 10:00": "keep",
    }
    assert marks(entries, "keep-yearly=1")["2024-12-31 10:00"] == "keep"
    assert marks(entries, "keep-yearly=1")["2024-12-29 10:00"] == "remove"


def test_protected_are_never_removed_and_count_for_no_rule():
    entries = group("2024-05-01 02:00", "2024-05-02 02:00", "2024-05-03 02:00", protected=("2024-05-03 02:00",))
    assert marks(entries, "keep-last=1") == {
        "2024-05-03 02:00": "protected",
        "2024-05-02 02:00": "keep",
        "2024-05-01 02:00": "remove",
    }


def test_keep_all_and_no_rule_keep_everything_and_bad_values_are_refused():
    entries = group("2024-05-01 02:00", "2024-05-02 02:00")
    assert set(marks(entries, "keep-all=1").values()) == {"keep"}
    assert set(marks(entries, "keep-last=0").values()) == {"keep"}
    for bad in ("keep-all=1,keep-last=1", "keep-last=x", "keep-often=1"):
        with pytest.raises(ConfigError):
            prune.parse_keep(bad)


def test_vzdump_prunes_after_each_backup_on_a_real_storage(tmp_path):
    root = User.objects.get(userid="root@pam")
    storage = services.create_storage("bk-prune", {"path": str(tmp_path), "content": "images,backup"}, actor=root)
    vmid = 9720
    services.create_vm(vmid, {"name": "bk-prune", "scsi0": "bk-prune:0.001"}, node="testnode", actor=root)
    dump = tmp_path / "dump"
    dump.mkdir()
    old = [f"vzdump-qemu-{vmid}-2020_01_0{day}-02_00_00.tar" for day in (1, 2, 3)]
    for name in old:
        (dump / name).write_bytes(b"")
        (dump / f"{name.removesuffix('.tar')}.log").write_text("log\n")
        (dump / f"{name}.notes").write_text("notes\n")
    (dump / f"{old[0]}.protected").touch()
    other = f"vzdump-qemu-{vmid + 1}-2020_01_01-02_00_00.tar"
    (dump / other).write_bytes(b"")
    lines: list[str] = []
    (written,) = vzdump(
        {"vmid": str(vmid), "storage": "bk-prune", "prune-backups": "keep-last=2"},
        owner=OWNER,
        log=lines.append,
        warn=lines.append,
    )
    left = sorted(p.name for p in dump.iterdir())
    new = written.partition("/")[2]
    assert left == sorted(
        [
            old[0], f"{old[0]}.protected", f"{old[0]}.notes", f"{old[0].removesuffix('.tar')}.log",  # protected
            old[2], f"{old[2]}.notes", f"{old[2].removesuffix('.tar')}.log",  # the newest old one
            new, f"{new.removesuffix('.tar')}.log",  # the new backup
            other,  # another VM's group
        ]
    )  # fmt: skip
    assert "INFO: prune older backups with retention: keep-last=2" in lines
    assert f"INFO: removing backup 'bk-prune:backup/{old[1]}'" in lines
    listed = {e["volid"]: e for e in volumes.list_volumes(storage, content="backup", vmid=vmid)}
    assert listed[f"bk-prune:backup/{old[0]}"]["protected"] == 1
    assert listed[f"bk-prune:backup/{old[0]}"]["ctime"] == at("2020-01-01 02:00")
    # remove=0: the retention is a limit (2 unprotected backups exist: refused, nothing written).
    before = sorted(p.name for p in dump.iterdir())
    with pytest.raises(VMError, match="job errors"):
        vzdump(
            {"vmid": str(vmid), "storage": "bk-prune", "prune-backups": "keep-last=2", "remove": "0"},
            owner=OWNER,
            log=lines.append,
            warn=lines.append,
        )
    assert any("There is a max backup limit of 2" in line for line in lines)
    assert sorted(p.name for p in dump.iterdir()) == before
    services.destroy_vm(VM.objects.get(vmid=vmid), actor=root)
    services.delete_storage(storage, actor=root)
    assert Path(tmp_path / "dump" / new).exists()
