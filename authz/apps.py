from django.apps import AppConfig


class AuthzConfig(AppConfig):
    name = "authz"
    verbose_name = "Access control"

    def ready(self) -> None:
        from authz import bootstrap, renderers  # noqa: F401  (registration side effects)
        from authz.permissions import PermissionDenied
        from portal.api.errors import register_error

        register_error(PermissionDenied, 403)
        from authz.exceptions import AccessDenied, AccessError

        register_error(AccessDenied, 403)
        register_error(AccessError, 400)
        from authz.permissions import check
        from portal.api.schema import register_privilege_check

        register_privilege_check(lambda user, path, privs, any_of: check(user, path, privs, any_of=any_of))
        self._register_login_status()

    def _register_login_status(self) -> None:
        """Failed-login counts travel in the volatile status, so every node throttles by the cluster's."""
        from authz import throttle
        from replicator import volatile

        volatile.register_collector(throttle.volatile_status)
