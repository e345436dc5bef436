from django.apps import AppConfig


class AuthzConfig(AppConfig):
    name = "authz"
    verbose_name = "Access control"

    def ready(self) -> None:
        from authz import bootstrap, renderers  # noqa: F401  (registration side effects)

