"""The HTTPS web server of a node: uvicorn with the node certificate, TLS 1.2 minimum, 1.3 offered.

Run as ``python -m portal.runner.web`` (by runnode and by the systemd unit), so the TLS policy
is the same everywhere. uvicorn's command-line ``--ssl-*`` options cannot set a minimum protocol
version, hence this entry point: uvicorn builds its context (certificate, ALPN) and
:func:`harden` raises the floor to TLS 1.2.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import uvicorn
from uvicorn.config import create_ssl_context
from uvicorn.supervisors import Multiprocess

from portal.runner.lifetime import end_with_parent
from portal.runner.reason import ReasonPhraseH11Protocol
from replicator.private import restrict_umask

APPLICATION = "portal.asgi:application"
CERTIFICATE_WAIT = 60.0
GRACEFUL_SHUTDOWN = 5  # seconds for open requests and websockets on SIGTERM


# Query parameters whose values never reach the access log (clients may send a login's password
# or a ticket in the query string: the API reads it there too, as pve-http-server does).
SECRET_PARAMETER_RE = re.compile(r"pass|secret|ticket|token|key|csrf|cookie|auth", re.IGNORECASE)


def redact_query(path: str) -> str:
    """``path`` with the values of secret-looking query parameters replaced; an unparsable query is dropped."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return f"{base}?(query not shown)"
    shown = [(key, "(hidden)" if SECRET_PARAMETER_RE.search(key) else value) for key, value in pairs]
    return f"{base}?{urlencode(shown, safe='()/:,@')}"


class RedactedAccessLog(logging.Filter):
    """uvicorn's access lines (``client, method, path, version, status``) with secrets taken out of the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def certificate_paths(etc_dir: Path, node: str) -> tuple[Path, Path]:
    """The node certificate and key rendered by the replicator into the config tree."""
    return etc_dir / "nodes" / node / "pve-ssl.pem", etc_dir / "nodes" / node / "priv" / "pve-ssl.key"


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 and 1.3 only (clients such as Terraform's provider default to 1.3)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


def server_ssl_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """The server context of the web process, built the way uvicorn builds it, then hardened."""
    context = create_ssl_context(
        certfile=str(certfile),
        keyfile=str(keyfile),
        password=None,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        cert_reqs=ssl.CERT_NONE,
        ca_certs=None,
        ciphers=None,  # the system's defaults (OpenSSL 3: no RC4, no 3DES, SECLEVEL 2)
    )
    return harden(context)


def _context_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    return harden(default())  # uvicorn's context (with its ALPN list), TLS 1.2 minimum


class WebConfig(uvicorn.Config):
    """uvicorn's configuration, set up whole in the process that serves.

    With several workers uvicorn pickles the configuration into each spawned worker, which
    loads it there: so what a serving process needs (the hardened TLS context with its
    certificate watcher, the redacting access-log filter, ending with the parent) is done in
    :meth:`load`, in every worker as in a single process.
    """

    watch: bool = False

    def load(self) -> None:
        fresh = not self.loaded
        super().load()
        if not fresh:
            return
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, RedactedAccessLog) for f in access.filters):
            access.addFilter(RedactedAccessLog())
        parent = multiprocessing.parent_process()
        if parent is not None and parent.pid is not None:
            end_with_parent(parent.pid)  # a worker never outlives its supervisor (nor keeps the port)
        if self.watch and self.ssl is not None:
            watch_certificate(self.ssl, Path(str(self.ssl_certfile)), Path(str(self.ssl_keyfile)))


def build_config(
    host: str,
    port: int,
    certfile: Path,
    keyfile: Path,
    log_level: str = "info",
    app: str = APPLICATION,
    *,
    workers: int = 1,
    load: bool = True,
) -> WebConfig:
    """The uvicorn configuration of the web process (``load``: loaded here, ``config.ssl`` is the
    server context; several workers load their own copy)."""
    config = WebConfig(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        ssl_context_factory=_context_factory,
        log_level=log_level,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        http=ReasonPhraseH11Protocol,  # error messages in the status line, as Proxmox clients expect
        workers=workers,
    )
    if load:
        config.load()
    return config


def wait_for_certificate(certfile: Path, keyfile: Path, timeout: float = CERTIFICATE_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not (certfile.exists() and keyfile.exists()):
        if time.monotonic() > deadline:
            sys.exit(
                f"web: node certificate {certfile} or key {keyfile} not found after {timeout:.0f} s "
                "(the replicator renders them; is it running?)"
            )
        time.sleep(0.2)


def watch_certificate(
    context: ssl.SSLContext, certfile: Path, keyfile: Path, interval: float = 2.0
) -> threading.Thread:
    """Load a renewed node certificate into the live context (new handshakes use it; pveproxy's reload).

    A node that joins a cluster gets a certificate signed by the cluster CA; ``pvecm updatecerts``
    renews it. A missing or half-written pair is skipped until it is whole again.
    """

    def stamp() -> tuple[float, float] | None:
        try:
            return certfile.stat().st_mtime, keyfile.stat().st_mtime
        except OSError:
            return None

    def run() -> None:
        seen = stamp()
        while True:
            time.sleep(interval)
            now = stamp()
            if now is None or now == seen:
                continue
            try:
                context.load_cert_chain(str(certfile), str(keyfile))
            except (OSError, ssl.SSLError):
                continue  # mid-replacement: try again on the next round
            seen = now

    thread = threading.Thread(target=run, name="certificate-watch", daemon=True)
    thread.start()
    return thread


def main() -> None:
    restrict_umask()  # task logs and anything else the web process creates are private
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.conf import settings

    certfile, keyfile = certificate_paths(Path(settings.PVE_ETC_DIR), settings.PVE_NODE_NAME)
    wait_for_certificate(certfile, keyfile)
    workers = settings.PVE_WEB_WORKERS
    config = build_config(
        settings.PVE_BIND_ADDRESS,
        settings.PVE_HTTPS_PORT,
        certfile,
        keyfile,
        settings.PVE_LOG_LEVEL.lower(),
        workers=workers,
        load=False,
    )
    config.watch = True
    if workers == 1:
        uvicorn.Server(config).run()
    else:  # pveproxy's model: one listening socket, worker processes restarted when they die
        Multiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
