"""The HTTPS web server of a node: uvicorn with the node certificate, TLS 1.2 minimum.

Run as ``python -m portal.runner.web`` (by runnode and by the systemd unit), so the TLS policy
is the same everywhere.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from pathlib import Path

import uvicorn


def certificate_paths(etc_dir: Path, node: str) -> tuple[Path, Path]:
    """The node certificate and key rendered by the replicator into the config tree."""
    return etc_dir / "nodes" / node / "pve-ssl.pem", etc_dir / "nodes" / node / "priv" / "pve-ssl.key"


def server_ssl_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """TLS 1.2 and 1.3 only (Terraform defaults to 1.3), the node certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile))
    return context


def build_config(host: str, port: int, certfile: Path, keyfile: Path, log_level: str = "info") -> uvicorn.Config:
    config = uvicorn.Config(
        "portal.asgi:application",
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        log_level=log_level,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
    )
    config.load()
    config.ssl = server_ssl_context(certfile, keyfile)
    return config


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.conf import settings

    certfile, keyfile = certificate_paths(Path(settings.PVE_ETC_DIR), settings.PVE_NODE_NAME)
    deadline = time.monotonic() + 60
    while not (certfile.exists() and keyfile.exists()):
        if time.monotonic() > deadline:
            sys.exit(f"node certificate not found at {certfile} (is the replicator running?)")
        time.sleep(0.2)
    config = build_config(
        settings.PVE_BIND_ADDRESS, settings.PVE_HTTPS_PORT, certfile, keyfile, settings.PVE_LOG_LEVEL.lower()
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
