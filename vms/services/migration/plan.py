"""What ``POST {vm}/migrate`` checks before its task starts, and what the task copies (qemu-server's
``migrate_vm`` API checks and ``QemuMigrate::prepare``).

Quorum; a target that is another member; no lock; a running VM only with ``online``; no local
devices (a stopped VM with ``force``, root only, as qemu-server); every storage the VM keeps
(shared ones) available on the target; each local volume mapped (``targetstorage``) to a
storage of the target holding images, and copyable: an image of this VM (no local CD-ROM, no
other VM's volume, no linked clone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cluster.models import Node
from replicator import client as replicator_client
from replicator.exceptions import ReplicationError
from vms import permissions
from vms.config import ConfigError
from vms.config_schema import STORAGE_RE
from vms.exceptions import RootOnly, StorageError, VMError, VMLocked
from vms.models import VM, Storage
from vms.permissions import Need
from vms.runtime_paths import vm_pid
from vms.services.migration.precheck import is_local, local_resources, unavailable_storages, volume_uses
from vms.storage import check_available

LOCK = "migrate"


@dataclass(frozen=True)
class MigratePlan:
    """A checked migration of VM ``vmid`` from ``source`` to ``target`` (JSON for the task message)."""

    vmid: int
    source: str
    target: str
    online: bool = False
    force: bool = False
    storagemap: dict[str, str] = field(default_factory=dict)  # source storage -> target storage
    default_storage: str | None = None  # ``targetstorage`` naming one storage: every local volume goes there

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def target_storage(self, storeid: str) -> str:
        return self.storagemap.get(storeid) or self.default_storage or storeid


def parse_targetstorage(text: str | None) -> tuple[dict[str, str], str | None]:
    """``targetstorage``: ``src:dst[,src:dst...]``, one storage for all, or ``1`` (each to itself)."""
    if not text or text == "1":
        return {}, None
    mapping: dict[str, str] = {}
    default = None
    for item in text.replace(";", ",").split(","):
        source, sep, target = item.partition(":")
        names = (source, target) if sep else (source,)
        if not all(STORAGE_RE.fullmatch(name) for name in names):
            raise ConfigError({"targetstorage": f"invalid storage mapping '{item}'"})
        if sep:
            mapping[source] = target
        elif default is None:
            default = source
        else:
            raise ConfigError({"targetstorage": "only one storage may be given without a source"})
    return mapping, default


def check_quorum() -> None:
    """Proxmox's ``check_cfs_quorum``: a node without quorum neither starts nor finishes a migration."""
    try:
        quorate = bool(replicator_client.status().get("quorate", True))
    except ReplicationError:
        quorate = False
    if not quorate:
        raise VMError("cluster not ready - no quorum?")


def check_target(vm: VM, target: str) -> None:
    if not Node.objects.filter(name=target).exists():
        raise ConfigError({"target": f"no such cluster node '{target}'"})
    if target == vm.node_id:
        raise ConfigError({"target": "target is local node."})


def check_migrate(
    vm: VM,
    target: str,
    *,
    actor: Any,
    online: bool = False,
    force: bool = False,
    targetstorage: str | None = None,
    log: Any = None,
) -> MigratePlan:
    """Every refusal of the API before the task; the plan (``online`` dropped for a stopped VM, with a warning)."""
    permissions.authorize(actor, [Need(("VM.Migrate",))], vmid=vm.vmid)
    if force and not permissions.is_superuser(actor):
        raise RootOnly("Only root may use the 'force' option.")
    storagemap, default = parse_targetstorage(targetstorage)
    if targetstorage:
        permissions.authorize(actor, [Need(("VM.Config.Disk",))], vmid=vm.vmid)
        for storeid in sorted({*storagemap.values(), *([default] if default else [])}):
            permissions.authorize(actor, [Need(("Datastore.AllocateSpace",), f"/storage/{storeid}")])
    check_quorum()
    check_target(vm, target)
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    running = vm_pid(vm.vmid) is not None
    if running and not online:
        raise VMError("can't migrate running VM without --online")
    if online and not running and log is not None:
        log("VM isn't running. Doing offline migration instead.")
    plan = MigratePlan(vm.vmid, vm.node_id, target, running, force, storagemap, default)
    local_volumes(vm, plan, log=log)
    return plan


def local_volumes(vm: VM, plan: MigratePlan, *, log: Any = None) -> list[tuple[str, str]]:
    """The local volumes to copy, each with the storage it goes to on the target (``prepare``'s checks)."""
    devices = local_resources(vm.config)
    if devices:
        if not plan.force or plan.online:
            raise VMError(f"can't migrate VM which uses local devices: {', '.join(devices)}")
        if log is not None:
            log("WARN: migrating VM which uses local devices")
    storages: Mapping[str, Storage] = {storage.storeid: storage for storage in Storage.objects.all()}
    uses = volume_uses(vm)
    kept = [use for use in uses if not is_local(use, storages)]
    missing = unavailable_storages(kept, storages, plan.target)
    if missing:
        raise StorageError(f"storage '{missing[0]}' is not available on node '{plan.target}'")
    copies = []
    for use in uses:
        if not is_local(use, storages):
            continue
        snapshots = use.attrs.get("referenced_in_snapshot")
        where = f" (referenced in snapshot - {sorted(snapshots)[0]})" if snapshots else ""
        if use.attrs.get("cdrom"):
            raise VMError(f"can't migrate local cdrom drive{where}")
        if use.owner != vm.vmid:
            raise VMError(f"can't migrate volume '{use.volid}' - owned by other VM (owner = VM {use.owner})")
        target = storages.get(plan.target_storage(use.storage))
        if target is None:
            raise StorageError(f"storage '{plan.target_storage(use.storage)}' does not exist")
        check_available(target, plan.target)
        if "images" not in target.content.split(","):
            raise StorageError(f"storage '{target.storeid}' does not support vm images")
        copies.append((use.volid, target.storeid))
    return copies
