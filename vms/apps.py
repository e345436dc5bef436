from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines and storage"

    def ready(self) -> None:
        from vms import bootstrap, renderers  # noqa: F401  (registration side effects)
