"""``PUT {vm}/cloudinit``: build the VM's cloud-init image again from its config, now.

A running VM gets the new image as a medium change of its cloud-init drive, so the guest reads
the new data the next time cloud-init runs; a stopped one gets it at its next start anyway.
"""

from __future__ import annotations

from typing import Any

from vms.cloudinit import image
from vms.exceptions import VMError, VMLocked
from vms.models import VM
from vms.qemu import process, qmp


def regenerate(vm: VM, *, actor: Any) -> None:
    """Regenerate the image; refused while the VM is locked. Nothing to do without a cloud-init drive.

    ``actor`` was authorised by the caller (VM.Config.Cloudinit); the image is node-local state,
    so no cluster log entry is written, as in qemu-server."""
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    config = vm.full_config()
    key = image.drive_key(config)
    if key is None:
        return
    running = process.is_running(vm.vmid)
    path = image.generate(vm.vmid, config)
    if running and path is not None:
        try:
            qmp.command(
                vm.vmid,
                "blockdev-change-medium",
                {"id": key, "filename": str(path), "format": "raw", "read-only-mode": "read-only"},
            )
        except qmp.QMPCommandError as exc:
            raise VMError(f"unable to change the cloud-init medium of {key}: {exc}") from None
