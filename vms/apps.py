from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines and storage"

    def ready(self) -> None:
        from authz import pool_members
        from cluster.membership import guests
        from portal.api.errors import register_error
        from portal.runner.node import register_child
        from portal.tasks import locks
        from replicator import volatile
        from vms import bootstrap, renderers  # noqa: F401  (registration side effects)
        from vms.config import ConfigError
        from vms.exceptions import VMError
        from vms.guests import ClusterGuests
        from vms.leases import VMLocks
        from vms.pool_members import storage_members, vm_members
        from vms.qemu.agent import AgentError
        from vms.qemu.watcher import watcher_child
        from vms.status import collector, daemon

        register_error(ConfigError, 400, lambda exc: "Parameter verification failed.")
        register_error(VMError, lambda exc: exc.status)
        register_error(AgentError, 500)
        locks.register("vm", VMLocks())
        guests.register(ClusterGuests())  # VMIDs for joins and node removal
        pool_members.register("vms", vm_members)  # the resolver's pool membership of /vms/<vmid>
        pool_members.register("storage", storage_members)  # ... and of /storage/<storeid>
        register_child(watcher_child)  # qmeventd: onboot VMs, then the QEMU watcher
        volatile.register_collector(collector.published)  # running VMs and storages, to every node
        register_child(daemon.child_spec)  # pvestatd under runnode
