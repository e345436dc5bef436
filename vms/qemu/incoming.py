"""The target node's half of a live migration (qemu-server's ``vm_start`` with ``migratedfrom``).

While it runs the source node still owns the VM, so the config is read from the replicated
state only if it names ``migratedfrom`` as the VM's node and carries the ``migrate`` lock (this
path alone reads another node's VM). QEMU starts with the running machine type of the source
(``runningmachine``), listens for the memory stream (secure: a unix socket the source reaches
through an SSH forward; insecure: TCP on this node's address in the migration network) and
stays paused once loaded (``-S``) until the source has moved the config here and resumes it.
``stop_incoming`` ends such a QEMU only while this node does not own the VM.

Local disks (``disks``: drive key -> target storage, format and size, as the source's running
QEMU sees them): each gets a new image on this node, QEMU uses those, and an NBD server exports
them writable (unix socket next to the memory's, or TCP in the migration network) for the
source's ``drive-mirror``: one ``storage migration listens on nbd:... volume:<volid>`` line each.
The NBD server is stopped before the guest is resumed (qemu-server's ``qm nbdstop``). The new
images are recorded (:mod:`.incoming_volumes`) until the resume makes them the VM's disks or a
stop of the unfinished migration frees them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from vms.cloudinit import image as cloudinit_image
from vms.exceptions import VMError
from vms.models import VM, Storage
from vms.property_strings import property_string_format, property_string_parse
from vms.qemu import drives, incoming_volumes, migration, process, qmp
from vms.runtime_paths import run_dir
from vms.storage import volumes

Log = Callable[[str], None]
MIGRATE_LOCK = "migrate"
TCP_PORTS = range(60000, 60050)  # qemu-server's migration port range
RESUME_WAIT = 30.0  # seconds the moved config may take to reach this node's database


def socket_path(vmid: int) -> str:
    return str(run_dir() / f"{int(vmid)}.migrate")


def nbd_socket_path(vmid: int) -> str:
    return str(run_dir() / f"{int(vmid)}_nbd.migrate")


NbdDisks = dict[str, tuple[str, str, int]]  # drive key -> (target storage, format, size in bytes)


def parse_nbd_disks(text: str) -> NbdDisks:
    """``scsi0=local:qcow2:1073741824[,virtio1=...]`` (the source's ``--nbd-disks``)."""
    disks: NbdDisks = {}
    for item in filter(None, text.split(",")):
        key, _, spec = item.partition("=")
        storeid, fmt, size = [*spec.split(":"), "", "", ""][:3]
        if not key or not storeid or fmt not in ("raw", "qcow2", "vmdk") or not size.isdigit() or int(size) <= 0:
            raise VMError(f"invalid local disk '{item}' (key=storage:format:bytes)")
        disks[key] = (storeid, fmt, int(size))
    return disks


def format_nbd_disks(disks: NbdDisks) -> str:
    return ",".join(f"{key}={storeid}:{fmt}:{size}" for key, (storeid, fmt, size) in sorted(disks.items()))


def _allocate(vm: VM, disks: NbdDisks, log: Log) -> dict[str, str]:
    """A new image for each local disk; drive key -> its volume id here (all freed again on failure)."""
    made: dict[str, str] = {}
    try:
        for key, (storeid, fmt, size) in sorted(disks.items()):
            value = vm.config.get(key, "")
            items = property_string_parse(value, default_key="file") if value else {}
            if (
                not items.get("file")
                or items.get("media") == "cdrom"
                or not (drives.DRIVE_KEY_RE.fullmatch(key) or key == "efidisk0")
            ):
                raise VMError(f"'{key}' is not a disk of VM {vm.vmid}")
            storage = Storage.objects.filter(storeid=storeid).first()
            if storage is None:
                raise VMError(f"storage '{storeid}' does not exist")
            made[key] = volumes.alloc_volume(storage, vm.vmid, size, fmt=fmt)
            log(f"allocated '{made[key]}' for {key} ({size} bytes, {fmt})")
    except Exception:
        _free(list(made.values()), log)
        raise
    return made


def _free(volids: list[str], log: Log) -> None:
    for volid in volids:
        try:
            volumes.free_volume(volid)
        except Exception as exc:
            log(f"ERROR: could not free '{volid}': {exc}")


def _with_volumes(config: dict[str, str], made: dict[str, str]) -> dict[str, str]:
    result = dict(config)
    for key, volid in made.items():
        items = property_string_parse(config[key], default_key="file")
        items["file"] = volid
        items.pop("size", None)
        result[key] = property_string_format(items, default_key="file")
    return result


def export_disks(vmid: int, made: dict[str, str], stateuri: str, address: str | None) -> list[str]:
    """The NBD server and one writable export per new image; the lines the source reads."""
    if stateuri == "unix":
        path = nbd_socket_path(vmid)
        qmp.command(vmid, "nbd-server-start", {"addr": {"type": "unix", "data": {"path": path}}})
        base = f"nbd:unix:{path}"
    else:
        assert address is not None
        port = _free_port(address)
        qmp.command(vmid, "nbd-server-start", {"addr": {"type": "inet", "data": {"host": address, "port": str(port)}}})
        base = f"nbd:{'[' + address + ']' if ':' in address else address}:{port}"
    lines = []
    for key, volid in sorted(made.items()):
        qmp.command(vmid, "nbd-server-add", {"device": f"drive-{key}", "writable": True})
        lines.append(f"storage migration listens on {base}:exportname=drive-{key} volume:{volid}")
    return lines


def stop_nbd(vmid: int) -> None:
    """End the NBD server of a finished storage migration (none running is fine)."""
    try:
        qmp.command(vmid, "nbd-server-stop")
    except qmp.QMPCommandError as exc:
        if "not running" not in str(exc):
            raise


def migrating_vm(vmid: int, migratedfrom: str) -> VM:
    """The VM, still owned by ``migratedfrom`` and locked for a migration (the only other node's VM read here)."""
    vm = VM.objects.filter(vmid=int(vmid)).first()
    if vm is None or vm.node_id != migratedfrom:
        raise VMError(f"VM {vmid} is not on node '{migratedfrom}'")
    if migratedfrom == settings.PVE_NODE_NAME:
        raise VMError("migratedfrom is this node")
    if vm.lock != MIGRATE_LOCK:
        raise VMError(f"VM {vmid} is not locked for a migration")
    return vm


def migration_ip(network: str) -> str:
    """This node's address inside ``network`` (a CIDR), as ``pvecm mtunnel -get_migration_ip`` answers."""
    try:
        cidr = ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise VMError(f"invalid migration network '{network}'") from None
    done = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True)
    for link in json.loads(done.stdout):
        for entry in link.get("addr_info", []):
            if ipaddress.ip_address(entry["local"]) in cidr:
                return str(entry["local"])
    raise VMError(f"could not get migration ip: no IP address configured on local node for network '{network}'")


def _free_port(address: str) -> int:
    for port in TCP_PORTS:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return port
    raise VMError("unable to find free migration port")


def start_incoming(
    vmid: int,
    *,
    migratedfrom: str,
    stateuri: str,
    machine: str,
    network: str | None,
    log: Log,
    disks: NbdDisks | None = None,
) -> migration.Listening:
    """QEMU of the migrating VM started here, listening; what the source needs (printed as qemu-server)."""
    vm = migrating_vm(vmid, migratedfrom)
    if process.is_running(vm.vmid):
        raise VMError(f"VM {vmid} already running")
    address = None
    if stateuri == "unix":
        uri = f"unix:{socket_path(vm.vmid)}"
    elif stateuri == "tcp":
        if not network:
            raise VMError("stateuri tcp needs a migration network")
        address = migration_ip(network)
        host = f"[{address}]" if ":" in address else address
        uri = f"tcp:{host}:{_free_port(address)}"
    else:
        raise VMError(f"unknown stateuri '{stateuri}' (unix or tcp)")
    incoming_volumes.free_recorded(vm.vmid, volumes.free_volume, log)  # an earlier attempt's leftovers
    made = _allocate(vm, disks, log) if disks else {}
    if made:
        incoming_volumes.remember(vm.vmid, list(made.values()))
    config = _with_volumes(dict(vm.config), made)
    if machine:
        config["machine"] = machine
    argv = process.command_for(vm.vmid, config) + migration.incoming_args(uri)
    try:
        if cloudinit_image.generate(vm.vmid, config):
            log("generated the cloud-init image (NoCloud)")
        process.plug_taps(vm.vmid, vm.config, log)
        process.launch(vm.vmid, argv, timeout=60, log=log)
        nbd_lines = export_disks(vm.vmid, made, stateuri, address) if made else []
    except BaseException:
        process.terminate(vm.vmid, timeout=5, log=log)
        process.cleanup(vm.vmid, vm.config)
        Path(nbd_socket_path(vm.vmid)).unlink(missing_ok=True)
        _free(list(made.values()), log)
        incoming_volumes.forget(vm.vmid)
        raise
    for line in nbd_lines:
        log(line)
    log(f"migration listens on {uri}")
    listening = migration.parse_listen_lines("\n".join([*nbd_lines, f"migration listens on {uri}"]))
    return listening


def stop_incoming(vmid: int, *, migratedfrom: str, log: Log) -> None:
    """End the QEMU of a migration that did not finish: only while ``migratedfrom`` still owns the VM."""
    vm = VM.objects.filter(vmid=int(vmid)).first()
    if vm is None or vm.node_id != migratedfrom or migratedfrom == settings.PVE_NODE_NAME:
        raise VMError(f"VM {vmid} is not on node '{migratedfrom}': its QEMU here is not a leftover")
    process.terminate(vm.vmid, timeout=5, log=log)
    process.cleanup(vm.vmid, vm.config)
    (run_dir() / f"{vm.vmid}.migrate").unlink(missing_ok=True)
    Path(nbd_socket_path(vm.vmid)).unlink(missing_ok=True)
    log(f"VM {vmid} stopped")
    incoming_volumes.free_recorded(vm.vmid, volumes.free_volume, log)  # the local disks' copies


def resume_incoming(vmid: int, *, log: Log, wait: float = RESUME_WAIT) -> None:
    """Continue the migrated guest once the moved config has reached this node (it owns the VM then)."""
    deadline = time.monotonic() + wait
    while True:
        vm = VM.objects.filter(vmid=int(vmid)).first()
        if vm is not None and vm.node_id == settings.PVE_NODE_NAME:
            break
        if time.monotonic() > deadline:
            raise VMError(f"VM {vmid} does not belong to node '{settings.PVE_NODE_NAME}': not resumed")
        time.sleep(0.01)  # the moved config arrives within milliseconds of its commit
    if not process.is_running(vmid):
        raise VMError(f"VM {vmid} not running")
    state = qmp.status(vmid)
    if state == "inmigrate":
        raise VMError(f"VM {vmid}: the incoming migration has not completed")
    stop_nbd(vmid)
    Path(nbd_socket_path(vmid)).unlink(missing_ok=True)
    if state != "running":
        qmp.command(vmid, "cont")
    incoming_volumes.forget(vmid)  # the copies are the VM's disks now
    log(f"VM {vmid} resumed")
