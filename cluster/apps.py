from django.apps import AppConfig


class ClusterConfig(AppConfig):
    name = "cluster"
    verbose_name = "Cluster"

    def ready(self) -> None:
        from cluster import bootstrap, nodestatus, renderers, services, ssh_keys  # noqa: F401  (registration side effects)
        from cluster.clock import live_warnings
        from cluster.corosync_conf import cluster_name
        from cluster.models import ClusterLogEntry
        from portal import audit, banners
        from replicator import cluster_log, transport, volatile

        audit.set_sink(lambda user, message: services.log_cluster_message(message, user=user))
        audit.set_recent(services.recent_cluster_log)
        volatile.register_collector(nodestatus.volatile_status)
        banners.register(live_warnings)
        transport.register_cluster_probe(cluster_name)  # a member stays one without its corosync files
        cluster_log.set_entry_factory(ClusterLogEntry.build)  # the replicator's own entries (divergence)
        self._register_forwarding()

    def _register_forwarding(self) -> None:
        """``/nodes/<other>/...`` is forwarded to that node; a CLI follows a task of another node through it."""
        from cluster import node_routing
        from portal.api import forwarding
        from portal.tasks import follow

        forwarding.set_node_resolver(node_routing.resolve)
        follow.set_remote_source(node_routing.RemoteTaskSource)
