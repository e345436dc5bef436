"""The one settings module: every operator setting comes from the environment.

Each ``PVE_*`` variable is documented in README.md (section "Configuration"); values are
validated here, at import, so a bad value stops every process with a clear message.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qsl, unquote, urlsplit

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from portal import allowed_hosts

# Django's generic classes (ModelAdmin, ModelForm, ...) subscriptable at run time as in their
# type stubs (``admin.ModelAdmin[VM]``): the annotations mypy checks are also valid Python.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

_NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
@overload
def _env(name: str, default: str | None) -> str | None: ...


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _env_float(name: str, default: float, minimum: float, maximum: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between {minimum:g} and {maximum:g}, got {value:g}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 0 or 1, got {raw!r}")


def database_from_url(url: str, *, setting: str) -> dict[str, Any]:
    """Turn ``sqlite:////abs/path.db`` or ``postgresql://user:pw@host:port/name`` into a DATABASES entry.

    A PostgreSQL URL may name a unix socket directory as libpq does (``postgresql://user@/name?host=/run/postgresql``);
    other query parameters are passed to libpq.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ImproperlyConfigured(f"{setting}: SQLite path must be absolute, got {url!r}")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                # WAL lets readers run beside the replicator; FULL fsyncs every commit, so an
                # acknowledged write survives power loss.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
                "timeout": 30,
            },
            "TEST": {"NAME": path},
        }
    if parts.scheme in ("postgres", "postgresql"):
        name = parts.path.lstrip("/")
        if not name:
            raise ImproperlyConfigured(f"{setting}: PostgreSQL URL needs a database name: {url!r}")
        options = dict(parse_qsl(parts.query))
        host = options.pop("host", parts.hostname or "")
        # Every commit waits for its WAL flush, whatever the server's or the role's default: the
        # replicator acknowledges a write only after its commit (it checks the server's fsync at start).
        options["options"] = f"{options.get('options', '')} -c synchronous_commit=on".strip()
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": host,
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "TEST": {"NAME": unquote(name)},
        }
    raise ImproperlyConfigured(f"{setting}: unsupported database URL scheme {parts.scheme!r} in {url!r}")


# --- Operator settings -------------------------------------------------------------------

PVE_DATA_DIR = Path(_env("PVE_DATA_DIR", str(BASE_DIR / "data"))).resolve()
PVE_ETC_DIR = Path(_env("PVE_ETC_DIR", str(PVE_DATA_DIR / "etc" / "pve"))).resolve()
PVE_NODE_NAME = _env("PVE_NODE_NAME", socket.gethostname().split(".")[0])
if not _NODE_NAME_RE.match(PVE_NODE_NAME or ""):
    raise ImproperlyConfigured(
        f"PVE_NODE_NAME {PVE_NODE_NAME!r} is not a valid node name (a DNS label: letters, digits, '-')"
    )
PVE_HTTPS_PORT = _env_int("PVE_HTTPS_PORT", 8006, 1, 65535)
PVE_BIND_ADDRESS = _env("PVE_BIND_ADDRESS", "0.0.0.0")
# Web worker processes sharing the HTTPS socket (pveproxy runs 3). The login gate (one attempt
# at a time per client address) holds per worker, so N workers let an address try N at once.
PVE_WEB_WORKERS = _env_int("PVE_WEB_WORKERS", 1, 1, 64)
PVE_NODE_ADDRESS = _env("PVE_NODE_ADDRESS")
if PVE_NODE_ADDRESS:  # this node's corosync link and known_hosts entry
    try:
        ipaddress.ip_address(PVE_NODE_ADDRESS)
    except ValueError:
        raise ImproperlyConfigured(f"PVE_NODE_ADDRESS must be an IP address, got {PVE_NODE_ADDRESS!r}") from None
PVE_CLUSTER_DATABASE_URL = _env("PVE_CLUSTER_DATABASE_URL", f"sqlite:///{PVE_DATA_DIR / 'cluster.db'}")
PVE_LOCAL_DATABASE_URL = _env("PVE_LOCAL_DATABASE_URL", f"sqlite:///{PVE_DATA_DIR / 'local.db'}")
REDIS_URL = _env("REDIS_URL")
PVE_REDIS_SOCKET = PVE_DATA_DIR / "redis.sock"
# A broker other than a unix socket inside the data directory (TCP, or a socket other local users
# may reach) lets them queue tasks for the node's worker: refused unless the operator says so.
PVE_ALLOW_REMOTE_BROKER = _env_bool("PVE_ALLOW_REMOTE_BROKER", False)


def _check_broker_url(url: str) -> None:
    """REDIS_URL must be ``unix://`` to a socket inside PVE_DATA_DIR (0700) unless PVE_ALLOW_REMOTE_BROKER=1."""
    if PVE_ALLOW_REMOTE_BROKER:
        return
    parts = urlsplit(url)
    path = Path(unquote(parts.path)).resolve() if parts.scheme == "unix" and parts.path.startswith("/") else None
    if path is None or not path.is_relative_to(PVE_DATA_DIR):
        raise ImproperlyConfigured(
            f"REDIS_URL {url!r} is not a unix socket inside PVE_DATA_DIR ({PVE_DATA_DIR}): any local user "
            "who reaches the broker can queue tasks for this node's worker. Unset REDIS_URL (runnode and "
            "pve-django-redis.service run a private redis on <PVE_DATA_DIR>/redis.sock), or set "
            "PVE_ALLOW_REMOTE_BROKER=1 to use it anyway"
        )


if REDIS_URL is not None:
    _check_broker_url(REDIS_URL)
PVE_REPLICATOR_SOCKET = Path(_env("PVE_REPLICATOR_SOCKET", str(PVE_DATA_DIR / "replicator.sock")))
PVE_ROOT_PASSWORD = _env("PVE_ROOT_PASSWORD")
PVE_MAX_CHANGESET_BYTES = _env_int("PVE_MAX_CHANGESET_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024)
PVE_CHANGELOG_RETAIN = _env_int("PVE_CHANGELOG_RETAIN", 100_000, 100, 10_000_000)
PVE_REPLICATOR_TIMEOUT = _env_int("PVE_REPLICATOR_TIMEOUT", 30, 1, 3600)
PVE_TRANSPORT = _env("PVE_TRANSPORT", "auto")
if PVE_TRANSPORT not in ("auto", "local", "corosync"):
    raise ImproperlyConfigured(f"PVE_TRANSPORT must be auto, local or corosync, got {PVE_TRANSPORT!r}")
PVE_CPG_GROUP = _env("PVE_CPG_GROUP", "pve_django_v1")
PVE_FAULT_INJECTION = _env_bool("PVE_FAULT_INJECTION", False)
PVE_STATUS_INTERVAL = _env_int("PVE_STATUS_INTERVAL", 2, 1, 60)
# Online nodes whose clocks differ by more than this many seconds are warned about.
PVE_CLOCK_SKEW_WARN = _env_float("PVE_CLOCK_SKEW_WARN", 2.0, 0.1, 3600.0)
# Tests only, honoured with PVE_FAULT_INJECTION: seconds added to this node's clock in its volatile status.
PVE_CLOCK_OFFSET = _env_float("PVE_CLOCK_OFFSET", 0.0, -86400.0, 86400.0)
PVE_CLUSTER_LOG_MAX = _env_int("PVE_CLUSTER_LOG_MAX", 10_000, 100, 10_000_000)
PVE_CHECKSUM_INTERVAL = _env_int("PVE_CHECKSUM_INTERVAL", 600, 5, 86400)
# Largest file accepted by a storage upload or URL download (bytes); the storage's free space limits it too.
PVE_UPLOAD_MAX_SIZE = _env_int("PVE_UPLOAD_MAX_SIZE", 64 * 1024**3, 1, 2**62)
PVE_LOCAL_STORAGE_PATH = Path(_env("PVE_LOCAL_STORAGE_PATH", str(PVE_DATA_DIR / "vz"))).resolve()
# Runtime state of this node's guests: QEMU pid files, QMP, VNC and guest-agent sockets (vms.runtime_paths).
PVE_RUN_DIR = Path(_env("PVE_RUN_DIR", str(PVE_DATA_DIR / "run"))).resolve()
PVE_LOG_DIR = Path(_env("PVE_LOG_DIR", str(PVE_DATA_DIR / "log"))).resolve()
PVE_LOG_LEVEL = (_env("PVE_LOG_LEVEL", "INFO") or "INFO").upper()
if PVE_LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR"):
    raise ImproperlyConfigured(f"PVE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {PVE_LOG_LEVEL!r}")
DEBUG = _env_bool("PVE_DEBUG", False)

if REDIS_URL is None:
    _redis_url = f"unix://{PVE_REDIS_SOCKET}"
    CELERY_BROKER_URL = f"redis+socket://{PVE_REDIS_SOCKET}"
else:
    _redis_url = REDIS_URL
    # Kombu spells a unix socket redis+socket://, redis-py (the Channels layer) unix://.
    CELERY_BROKER_URL = (
        "redis+socket://" + REDIS_URL[len("unix://") :] if REDIS_URL.startswith("unix://") else REDIS_URL
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = f"node.{PVE_NODE_NAME}"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task message delivered to a worker that died without acknowledging it is delivered again
# after this many seconds; the task itself never runs twice (portal.tasks.runner).
# An API request running a task in the web process (clone, snapshot, restore ...) answers with its
# UPID after at most this many seconds; the task goes on (``portal.tasks.index.run_api_task``).
PVE_API_TASK_WAIT = _env_float("PVE_API_TASK_WAIT", 3.0, 0.0, 3600.0)
PVE_TASK_REDELIVERY_TIMEOUT = _env_int("PVE_TASK_REDELIVERY_TIMEOUT", 3600, 2, 7 * 86400)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": PVE_TASK_REDELIVERY_TIMEOUT,
    "unacked_restore_interval": max(1, min(10, PVE_TASK_REDELIVERY_TIMEOUT // 4)),
    "unacked_restore_throttle": 1,
    # The restore sweep's lock in redis: a worker killed while holding it must not hold up
    # redelivery for long (kombu's default is 300 s).
    "unacked_mutex_expire": min(300, max(5, PVE_TASK_REDELIVERY_TIMEOUT)),
}
# How often every node checks whether the ticket signing key is due for rotation (24 h old).
PVE_AUTHKEY_CHECK_INTERVAL = _env_int("PVE_AUTHKEY_CHECK_INTERVAL", 300, 1, 86400)
# Each node's beat runs these on its own worker (queue node.<name>); a check missed while the
# worker was down is dropped, not run late in a burst.
CELERY_BEAT_SCHEDULE = {
    "reconcile-tasks": {"task": "cluster.reconcile_tasks", "schedule": 60.0},
    "rotate-authkey": {
        "task": "authz.rotate_authkey",
        "schedule": float(PVE_AUTHKEY_CHECK_INTERVAL),
        "options": {"expires": float(PVE_AUTHKEY_CHECK_INTERVAL)},
    },
    "purge-login-failures": {"task": "authz.purge_login_failures", "schedule": 600.0, "options": {"expires": 600.0}},
    # scheduled backup jobs (jobs.cfg); a late tick is harmless: slots are claimed, not counted
    "run-backup-jobs": {"task": "vms.run_backup_jobs", "schedule": 60.0, "options": {"expires": 60.0}},
}


def _secret_key() -> str:
    """A per-node key for Django's own signing (messages cookie); tickets use cluster keys."""
    explicit = _env("PVE_SECRET_KEY")
    if explicit:
        return explicit
    path = PVE_DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        PVE_DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


SECRET_KEY = _secret_key()

# --- Django --------------------------------------------------------------------------------

# The node's names and addresses (portal.allowed_hosts) plus PVE_ALLOWED_HOSTS (comma-separated).
PVE_ALLOWED_HOSTS = [name.strip() for name in (_env("PVE_ALLOWED_HOSTS", "") or "").split(",") if name.strip()]
ALLOWED_HOSTS = allowed_hosts.allowed_hosts(
    PVE_NODE_NAME or "", socket.gethostname(), PVE_NODE_ADDRESS, PVE_ALLOWED_HOSTS
)
APPEND_SLASH = False
# HTTPS only (port 8006 speaks nothing else): HSTS (0 turns it off), secure cookies everywhere
# (the messages cookie follows SESSION_COOKIE_SECURE; there are no sessions otherwise).
SECURE_HSTS_SECONDS = _env_int("PVE_HSTS_SECONDS", 31_536_000, 0, 10 * 31_536_000)
SESSION_COOKIE_SECURE = True

INSTALLED_APPS = [
    "authz.admin_config.PVEAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "replicator",
    "portal",
    "authz",
    "cluster",
    "cluster.lab",  # the lab harness: the ``lab`` command; production code never imports it
    "vms",
]

MIDDLEWARE = [
    "authz.login_gate.LoginGateMiddleware",  # first: async, a login waits its turn in the event loop
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "authz.middleware.TicketAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.runner.reason.ReasonPhraseHeaderMiddleware",
    "portal.api.extjs.ExtJSMiddleware",  # innermost: it sees (and re-wraps) the json answer
]

# Logins ride on cluster-signed tickets (authz.middleware), not on per-node database sessions.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E410"]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "authz.User"
AUTHENTICATION_BACKENDS = ["authz.backends.RealmBackend"]
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_SAMESITE = "Lax"
LOGIN_URL = "/admin/login/"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(PVE_LOCAL_DATABASE_URL, setting="PVE_LOCAL_DATABASE_URL"),
    "cluster": database_from_url(PVE_CLUSTER_DATABASE_URL, setting="PVE_CLUSTER_DATABASE_URL"),
}
DATABASE_ROUTERS = ["replicator.routers.ClusterRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = PVE_DATA_DIR / "static"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_redis_url]},
    }
}

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["portal.api.renderers.PVEJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "portal.api.parsers.PVEFormParser",
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "authz.api.authentication.APITokenAuthentication",
        "authz.api.authentication.TicketAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": PVE_LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# A cluster member's corosync.conf is copied here when its config_version rises; a node outside
# a cluster (no cluster name set) never writes it.
PVE_COROSYNC_CONF = Path(_env("PVE_COROSYNC_CONF", "/etc/corosync/corosync.conf") or "")
if not PVE_COROSYNC_CONF.is_absolute():
    raise ImproperlyConfigured(f"PVE_COROSYNC_CONF must be an absolute path, got {str(PVE_COROSYNC_CONF)!r}")
# The corosync authkey beside corosync.conf (Proxmox: /etc/corosync/authkey).
PVE_COROSYNC_AUTHKEY = Path(_env("PVE_COROSYNC_AUTHKEY", str(PVE_COROSYNC_CONF.parent / "authkey")) or "").resolve()
# Whether ``runnode`` supervises corosync itself (lab and single-host use) instead of systemd.
PVE_RUN_COROSYNC = _env_bool("PVE_RUN_COROSYNC", False)
# This node's root SSH key pair (``id_ed25519``) used for node-to-node SSH (Proxmox: /root/.ssh).
PVE_SSH_DIR = Path(_env("PVE_SSH_DIR", str(PVE_DATA_DIR / "ssh")) or "").resolve()
# The public host key of this node's sshd, published to the other nodes' known hosts.
PVE_SSH_HOST_KEY = Path(_env("PVE_SSH_HOST_KEY", "/etc/ssh/ssh_host_ed25519_key.pub") or "").resolve()
PVE_SSH_PORT = _env_int("PVE_SSH_PORT", 22, 1, 65535)
# Lab only: a JSON file mapping addresses to lab namespaces; ``pvecm qdevice`` then runs its
# commands "on a host" with ``ip netns exec`` instead of SSH (registered by the cluster.lab app).
_lab_hosts = _env("PVE_LAB_HOSTS")
PVE_LAB_HOSTS = Path(_lab_hosts).resolve() if _lab_hosts else None
if PVE_LAB_HOSTS is not None and not PVE_LAB_HOSTS.is_file():
    raise ImproperlyConfigured(f"PVE_LAB_HOSTS {str(PVE_LAB_HOSTS)!r} is not a file")
