"""Domain errors of the VM app; mapped to HTTP once, in vms.apps."""


class VMError(Exception):
    """Base of VM errors; ``errors`` holds per-parameter messages when there are any."""

    status = 500

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


class VMNotFound(VMError):
    """Proxmox's wording, which Terraform and Ansible recognise as 'gone'."""

    status = 500

    def __init__(self, vmid: int, node: str) -> None:
        super().__init__(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")


class VMLocked(VMError):
    status = 500

    def __init__(self, vmid: int, lock: str) -> None:
        super().__init__(f"VM {vmid} is locked ({lock})")


class DigestMismatch(VMError):
    status = 500

    def __init__(self) -> None:
        super().__init__("detected modified configuration - file changed by other user? Try again.")


class RootOnly(VMError):
    """What only root@pam may do (host devices and paths, ``args``, ``hookscript`` ...); Proxmox's wording."""

    status = 403


class VMProtected(VMError):
    """The ``protection`` flag forbids removing the VM or its disks."""

    status = 500

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} - protection mode enabled")


class StorageError(VMError):
    """A storage operation that failed (a volume that cannot be made, read, resized or freed)."""

    status = 500


class CalendarEventError(ValueError):
    """A schedule that is not a valid calendar event (``vms.jobs.calendar``)."""
