#!/usr/bin/env python3
"""vzdump of a running VM (snapshot mode, zstd) and qmrestore against the plain tools on the same image.

Usage: .venv/bin/python bench/backup.py [--size-gib 4] [--runs 2] [--no-append]

One node (replicator, broker, worker) in a temporary directory, a directory storage there, and a
VM with one raw disk of ``--size-gib`` GiB filled with a mix of data (a quarter left as holes, a
quarter random, half text-like), running (QEMU sitting in its firmware). Measured in one run,
alternating, ``--runs`` times each:
  1. backup: ``vzdump`` (``mode=snapshot``, ``compress=zstd``: the disk read by fleecing, streamed
     through tar | zstd while the VM runs);
     baseline: the image read by ``dd`` piped to ``zstd -T1`` (the compressor vzdump runs; QEMU 7.2's
     ``qemu-img convert`` and ``qemu-img dd`` cannot write to a pipe, so ``dd`` reads for them);
  2. restore: ``qmrestore`` of that archive to a new VMID (its disk written sparse); baseline:
     ``zstd -d`` of the same image's zstd stream piped to ``dd conv=sparse,fsync`` into a new file.
Throughput is the image size over the wall time. Targets: backup at least 0.8 of the baseline's
throughput. Results are appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import command_line, heading, publish  # noqa: E402
from bench.vm_start import NODE, node, stop_qemu  # noqa: E402

VMID, RESTORED = 9150, 9151
MIB = 1024 * 1024
GIB = 1024 * MIB
DURABLE = "bs=1M iflag=fullblock status=none conv=fsync"  # on disk at the end, as vzdump and qmrestore fsync


def fill(path: Path, size: int) -> None:
    """A reproducible mix: holes, random blocks and text-like blocks (1 MiB each)."""
    rng = random.Random(4711)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    text = b" ".join(rng.choice(words) for _ in range(MIB // 5))[:MIB]
    noise = [os.urandom(MIB) for _ in range(8)]
    with open(path, "r+b") as image:
        for offset in range(0, size, MIB):
            kind = rng.random()
            if kind < 0.25:
                continue  # a hole
            image.seek(offset)
            image.write(rng.choice(noise) if kind < 0.5 else text)
        image.flush()
        os.fsync(image.fileno())


def drop_caches() -> None:
    """Both sides start from a cold page cache (as a real backup of a big disk would)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(argv: str) -> float:
    drop_caches()
    begin = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", argv], check=True)
    return time.perf_counter() - begin


def measure(env: dict[str, str], store: Path, size: int, runs: int) -> dict[str, Any]:
    os.environ.update(env)
    import django

    django.setup()
    from authz.models import User
    from portal.tasks.index import TaskHandle
    from vms import services
    from vms.models import VM
    from vms.qemu import lifecycle, process
    from vms.services.backup import restore, vzdump
    from vms.storage import volume_path, volumes

    root = User.objects.get(userid="root@pam")
    storage = services.create_storage("bench", {"path": str(store), "content": "images,backup"}, actor=root)
    disk = volumes.alloc_volume(storage, VMID, size, fmt="raw")
    image = Path(volume_path(disk))
    fill(image, size)
    VM(vmid=VMID, node_id=NODE, config={"name": "backupbench", "memory": "256", "scsi0": f"{disk},size={size}"}).save()
    quiet = lambda line: None  # noqa: E731
    lifecycle.start_vm(VMID, log=quiet)
    work = store / "baseline"
    work.mkdir()
    result: dict[str, Any] = {"vzdump": [], "pipe": [], "qmrestore": [], "unpipe": [], "kvm": process.kvm_usable()}
    try:
        for _ in range(runs):
            for archive in (store / "dump").glob("vzdump-*"):
                archive.unlink()
            task = TaskHandle("vzdump", str(VMID), "root@pam")
            drop_caches()
            begin = time.perf_counter()
            lines: list[str] = []
            written = vzdump({"vmid": VMID, "storage": "bench", "mode": "snapshot", "compress": "zstd", "remove": 0},
                             owner=task.upid, log=lines.append, warn=lines.append)  # fmt: skip
            result["path"] = "fleecing" if any("started backup fleecing" in line for line in lines) else "copy first"
            result["vzdump"].append(time.perf_counter() - begin)
            task.finish()
            result["archive"] = Path(volume_path(written[0])).stat().st_size
            result["pipe"].append(
                timed(f"dd if={image} bs=1M status=none | zstd -q -c -T1 | dd of={work}/disk.zst {DURABLE}")
            )

            if VM.objects.filter(vmid=RESTORED).exists():
                services.destroy_vm(VM.objects.get(vmid=RESTORED), actor=root)
            task = TaskHandle("qmrestore", str(RESTORED), "root@pam")
            plan = restore.check_restore(written[0], RESTORED, actor=root, storage="bench")
            drop_caches()
            begin = time.perf_counter()
            restore.restore(plan, actor=root, owner=task.upid, log=quiet)
            result["qmrestore"].append(time.perf_counter() - begin)
            task.finish()
            target = work / "restored.raw"
            target.unlink(missing_ok=True)
            result["unpipe"].append(timed(f"zstd -q -d -c {work}/disk.zst | dd of={target} {DURABLE},sparse"))
    finally:
        stop_qemu(VMID)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.runs < 1 or args.size_gib < 1:
        parser.error("--runs and --size-gib must be at least 1")
    size = args.size_gib * GIB
    with tempfile.TemporaryDirectory(prefix="pve-backupbench-", dir="/var/tmp") as tmp, node(Path(tmp)) as env:
        store = Path(tmp) / "store"
        store.mkdir()
        result = measure(env, store, size, args.runs)

    def rate(seconds: list[float]) -> float:
        return size / MIB / min(seconds)  # the best run of each: the least disturbed by the machine

    backup, pipe = rate(result["vzdump"]), rate(result["pipe"])
    restored, unpipe = rate(result["qmrestore"]), rate(result["unpipe"])
    met = "met" if backup / pipe >= 0.8 else "NOT met"
    text = "\n".join(
        [
            heading("vzdump and qmrestore against dd | zstd and zstd -d | dd"),
            "",
            f"Command: {command_line(args, 'size_gib', 'runs')} ({os.cpu_count()} CPUs)",
            "",
            f"A running VM (KVM {'on' if result['kvm'] else 'off'}) with one {args.size_gib} GiB raw disk "
            f"(a quarter holes, a quarter random, half text-like); archive {result['archive'] / MIB:.0f} MiB; "
            f"cold page cache before each; the best of {args.runs} runs each, alternating.",
            "",
            f"- vzdump snapshot mode ({result['path']}), zstd: {backup:.0f} MiB/s; `dd | zstd -T1`: {pipe:.0f} MiB/s; "
            f"ratio {backup / pipe:.2f} (target at least 0.8: {met}).",
            f"- qmrestore: {restored:.0f} MiB/s; `zstd -d | dd conv=sparse`: {unpipe:.0f} MiB/s; "
            f"ratio {restored / unpipe:.2f}.",
            "",
        ]
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
