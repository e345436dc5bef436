"""Moving a VM to another node of the cluster (PVE-INTERNALS §10): the precheck, the checks, the migration task."""

from vms.services.migration.online import migrate_vm
from vms.services.migration.plan import LOCK, MigratePlan, check_migrate
from vms.services.migration.precheck import precheck

__all__ = ["LOCK", "MigratePlan", "check_migrate", "migrate_vm", "precheck"]
