"""The ``qmigrate`` task of a running VM (qemu-server's ``phase2`` and ``phase3_cleanup``), and the dispatch.

Under the VM's ``migrate`` lock (a lease of the task) and its config lock: the target starts QEMU
for the VM paused in incoming mode with the source's machine type (a ``start`` with
``migratedfrom`` asked of its API, else ``qm start`` over node SSH: :mod:`.target`); the memory
goes through an SSH unix-socket forward (secure, the default: :mod:`.tunnel`) or straight to the
target's address in the migration network (insecure); once QEMU says
``completed`` (and the local disks' mirrors are ended, :mod:`.nbd`) and the node is still quorate,
ONE replicated change makes the target the owner (drives renamed to their copies),
then the target guest is resumed and the source QEMU ended. Before that change any failure or
a stop of the task (SIGTERM raises SystemExit) cancels the migration, lets the source guest run
on, stops the target QEMU (only while the source owns the VM), frees the target's copies of the
local disks and releases the lock. The source's volumes are freed only after its QEMU ended.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from django.db import transaction

from cluster.models import ClusterSettings
from cluster.services import log_cluster_message
from vms.exceptions import VMError
from vms.leases import config_lock, task_lease
from vms.models import VM
from vms.property_strings import property_string_parse
from vms.qemu import migration as qemu_migration
from vms.qemu import process, snapshots
from vms.qemu.incoming import format_nbd_disks
from vms.runtime_paths import run_dir
from vms.services.disks import free_quietly
from vms.services.migration import nbd, offline, remote
from vms.services.migration.plan import LOCK, MigratePlan, check_quorum, local_volumes
from vms.services.migration.target import UNKNOWN, Target
from vms.services.migration.tunnel import SshForwards

Log = Callable[[str], None]


def migration_settings(migration_type: str | None, network: str | None) -> tuple[str, str | None]:
    """The type and network: the task's options, else datacenter.cfg's ``migration``, else secure."""
    row = ClusterSettings.objects.filter(id="datacenter").first()
    raw = str(row.options.get("migration", "")) if row is not None else ""
    try:
        configured = property_string_parse(raw, default_key="type") if raw else {}
    except ValueError:
        configured = {}
    kind = migration_type or configured.get("type") or "secure"
    if kind not in ("secure", "insecure"):
        raise VMError(f"unknown migration type '{kind}'")
    return kind, network or configured.get("network") or None


def migrate_vm(
    plan: MigratePlan,
    *,
    owner: str,
    user: str,
    log: Log,
    bwlimit: int | None = None,
    migration_type: str | None = None,
    migration_network: str | None = None,
) -> None:
    """Run a checked migration as task ``owner``: online for a running VM with ``online``, else offline."""
    if not plan.online:
        offline.migrate_vm(plan, owner=owner, user=user, log=log, bwlimit=bwlimit)
        return
    started = time.monotonic()
    log(f"starting migration of VM {plan.vmid} to node '{plan.target}'")
    with task_lease(plan.vmid, LOCK, owner), config_lock(plan.vmid):
        try:
            check_quorum()
            vm = offline.current(plan, owner, online=True)
            disks = nbd.split(vm, local_volumes(vm, plan, log=log))
            kind, network = migration_settings(migration_type, migration_network)
            problems = _migrate(vm, plan, user, log, bwlimit, kind, network, disks)
        except BaseException as exc:
            log(f"ERROR: migration aborted (duration {offline.duration(started)}): {exc}")
            raise
    if problems:
        log(f"ERROR: migration finished with problems (duration {offline.duration(started)})")
        raise VMError("migration problems")
    log(f"migration finished successfully (duration {offline.duration(started)})")


def _parameters(vm: VM, bwlimit: int | None) -> dict[str, int]:
    config = vm.config
    downtime = float(config["migrate_downtime"]) if "migrate_downtime" in config else None
    speed = int(config["migrate_speed"]) if "migrate_speed" in config else None
    return qemu_migration.parameters(downtime=downtime, migrate_speed=speed, bwlimit=bwlimit)


def _migrate(
    vm: VM,
    plan: MigratePlan,
    user: str,
    log: Log,
    bwlimit: int | None,
    kind: str,
    network: str | None,
    disks: nbd.LocalDisks,
) -> bool:
    """Phase 2 and 3; whether there were problems after the ownership moved (the migration itself done)."""
    machine = snapshots.current_machine(vm.vmid)
    shell = remote.LazyShell(plan.target)
    target = Target(plan.target, shell, log)
    forwards = SshForwards(plan.target, vm.vmid) if kind == "secure" else None  # connecting while the target starts
    mirrors = nbd.Mirrors(vm.vmid, log)
    copied: dict[str, str] = {}  # source volume id -> its copy on the target
    exported: set[str] = set()  # copies the target allocated itself (and frees when stopped)
    target_started = moved = False
    try:
        if disks.streamed:
            offline.copy_volumes(shell, disks.streamed, copied, log, bwlimit)
        values = {"migratedfrom": plan.source, "machine": machine, "stateuri": "unix" if kind == "secure" else "tcp",
                  "migration_network": network, "nbd-disks": format_nbd_disks(disks.targets) if disks.targets else None}  # fmt: skip
        log(f"starting VM {vm.vmid} on remote node '{plan.target}'")
        result = target.start(vm.vmid, values)
        listening = qemu_migration.Listening()
        with contextlib.suppress(qemu_migration.MigrationError):
            listening = qemu_migration.parse_listen_lines(result.stdout)
        for key, (_uri, volid) in listening.disks.items():
            copied[disks.mirrored[key]] = volid  # before anything can fail: freed again on failure
            exported.add(volid)
        target_started = result.returncode in (0, UNKNOWN)  # a target that may run is stopped on failure
        if result.returncode != 0:
            raise VMError(f"start of VM {vm.vmid} on node '{plan.target}' failed: {result.output()}")
        if set(listening.disks) != set(disks.mirrored):
            raise VMError(f"node '{plan.target}' did not export the local disks {sorted(disks.mirrored)}")
        uri, exports = listening.uri, {key: uri for key, (uri, _volid) in listening.disks.items()}
        log(f"target QEMU listens on {uri}")
        if forwards is not None:
            uri, exports = _tunnel(vm.vmid, plan.target, uri, exports, forwards, log)
        if exports:
            mirrors.start(exports, bwlimit=bwlimit)
        qemu_migration.migrate(vm.vmid, uri, _parameters(vm, bwlimit), log=log)
        mirrors.finish()
        check_quorum()
        with transaction.atomic(using=offline.CLUSTER):
            vm.node_id = plan.target
            vm.config = offline.renamed(vm.config, copied)
            vm.save()
            log_cluster_message(f"VM {vm.vmid} migrated from {plan.source} to {plan.target}", user=user, tag="qmigrate")
        moved = True
        log(f"VM {vm.vmid} now belongs to node '{plan.target}'")
    except BaseException:
        vm.node_id = plan.source
        mirrors.cancel()
        qemu_migration.cancel(vm.vmid, log=log)
        stopped = target_started and _stop_target(target, vm.vmid, plan.source, log)
        # a stopped target freed the images it allocated; the rest (and all, if it could not be stopped) here
        offline.free_copies(shell, [v for v in copied.values() if not (stopped and v in exported)], log)
        raise
    finally:
        if forwards is not None:
            forwards.close()
        if not moved:
            shell.close()
    return _finish(shell, target, vm, plan, log, list(copied))


def _tunnel(
    vmid: int, target: str, uri: str, exports: dict[str, str], forwards: SshForwards, log: Log
) -> tuple[str, dict[str, str]]:
    """SSH forwards for the memory socket and the NBD socket; the URIs the source uses instead."""
    local = str(run_dir() / f"{vmid}.migrate-tunnel")
    forwards.forward(local, uri.removeprefix("unix:"))
    local_exports: dict[str, str] = {}
    if exports:
        remote_socket = next(iter(exports.values())).removeprefix("nbd:unix:").partition(":exportname=")[0]
        local_nbd = str(run_dir() / f"{vmid}_nbd.migrate-tunnel")
        forwards.forward(local_nbd, remote_socket)
        for key, export in exports.items():
            local_exports[key] = f"nbd:unix:{local_nbd}:exportname={export.partition(':exportname=')[2]}"
    log(f"SSH tunnel to node '{target}' open")
    return f"unix:{local}", local_exports


def _stop_target(target: Target, vmid: int, source: str, log: Log) -> bool:
    """``stop --migratedfrom`` on the target (which also frees the images it allocated); whether it did."""
    try:
        result = target.stop(vmid, source)
    except VMError as exc:
        log(f"ERROR: could not stop VM {vmid} on node '{target.node}', check manually: {exc}")
        return False
    if result.returncode == 0:
        log(f"target VM {vmid} on node '{target.node}' stopped")
        for line in result.stdout.splitlines():
            if line.startswith("freed '"):
                log(f"{line} on node '{target.node}'")
        return True
    log(f"ERROR: could not stop VM {vmid} on node '{target.node}', check manually: {result.output()}")
    return False


def _finish(
    shell: remote.NodeShell,
    target: Target,
    vm: VM,
    plan: MigratePlan,
    log: Log,
    copied: list[str],
) -> bool:
    """After the ownership moved: resume the target, end the source QEMU, free the source's copied
    volumes (only once no QEMU uses them); whether anything went wrong."""
    problems = False
    try:
        resumed = target.resume(vm.vmid)
        if resumed.returncode != 0:
            raise VMError(resumed.output())
        log(f"VM {vm.vmid} resumed on node '{plan.target}'")
    except VMError as exc:
        problems = True
        log(f"ERROR: unable to resume VM {vm.vmid} on node '{plan.target}': {exc}")
    finally:
        shell.close()
    try:
        process.terminate(vm.vmid, timeout=10, log=log)
        process.cleanup(vm.vmid, vm.config)
        log(f"source QEMU of VM {vm.vmid} stopped")
    except Exception as exc:
        problems = True
        log(f"ERROR: unable to stop the source QEMU of VM {vm.vmid}: {exc}")
    with contextlib.suppress(OSError):
        (run_dir() / f"{vm.vmid}.migrate-tunnel").unlink(missing_ok=True)
        (run_dir() / f"{vm.vmid}_nbd.migrate-tunnel").unlink(missing_ok=True)
    if copied and not problems:
        log("removing the source volumes")
        problems = bool(free_quietly(copied, log))
    elif copied:
        log(f"WARN: the source volumes {', '.join(copied)} were kept: remove them once the VM runs on '{plan.target}'")
    return problems
