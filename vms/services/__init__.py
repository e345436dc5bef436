"""The functions that change VM and storage state; every edge (API, admin, ``qm``, operations) calls these.

Each write checks ``actor``'s privileges for exactly what it changes, then stores the change and
its cluster log entry in one change set. A ``check_*`` function runs every check of its write
without writing, so an edge can refuse before it starts a task.
"""

from vms.services.storage import check_storage, create_storage, delete_storage, update_storage
from vms.services.vms import (
    UNCHANGED,
    check_vm_create,
    check_vm_destroy,
    check_vm_update,
    create_vm,
    destroy_vm,
    unlock_vm,
    update_vm_config,
)

__all__ = [
    "UNCHANGED",
    "check_storage",
    "check_vm_create",
    "check_vm_destroy",
    "check_vm_update",
    "create_storage",
    "create_vm",
    "delete_storage",
    "destroy_vm",
    "unlock_vm",
    "update_storage",
    "update_vm_config",
]
