from django.apps import AppConfig


class LabConfig(AppConfig):
    """The lab harness as an app: its ``lab`` command, and in a lab node the namespace runner for ``pvecm qdevice``."""

    name = "cluster.lab"
    label = "lab"
    verbose_name = "Lab harness"

    def ready(self) -> None:
        from django.conf import settings

        if settings.PVE_LAB_HOSTS:  # a lab node: "on a host" is ``ip netns exec``, not SSH
            from cluster.corosync import qdevice
            from cluster.lab.qdevice import NamespaceRunner

            hosts = settings.PVE_LAB_HOSTS
            qdevice.set_runner_factory(lambda: NamespaceRunner.load(hosts))
