from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Cluster"

    def ready(self) -> None:
        from cluster import renderers, services  # noqa: F401  (registration side effects)
        from cluster.corosync.conf import cluster_name
        from cluster.keys import ssh_keys  # noqa: F401  (registration side effects)
        from cluster.membership import bootstrap  # noqa: F401  (registration side effects)
        from cluster.models import ClusterLogEntry
        from cluster.status import nodestatus
        from cluster.status.clock import live_warnings
        from portal import audit, banners
        from replicator import cluster_log, membership, volatile

        audit.set_sink(lambda user, message: services.log_cluster_message(message, user=user))
        audit.set_recent(ClusterLogEntry.recent)
        volatile.register_collector(nodestatus.volatile_status)
        banners.register(live_warnings)
        membership.register_cluster_probe(cluster_name)  # a member stays one without its corosync files
        cluster_log.set_entry_factory(ClusterLogEntry.build)  # the replicator's own entries (divergence)
        self._register_forwarding()

    def _register_forwarding(self) -> None:
        """``/nodes/<other>/...`` is forwarded to that node; a CLI follows a task of another node through it."""
        from cluster.membership import routing
        from portal.api import forwarding
        from portal.tasks import follow

        forwarding.set_node_resolver(routing.resolve)
        follow.set_remote_source(routing.RemoteTaskSource)
