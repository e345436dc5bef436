"""Node-to-node SSH trust: each node's root key and sshd host key, published in the replicated state.

Proxmox keeps one ``priv/authorized_keys`` and ``priv/known_hosts`` in pmxcfs and merges keys
into them by hand. Here every node publishes its two public keys as its own rows
(``nodes/<node>/ssh_root.pub`` and ``nodes/<node>/ssh_host.pub``) and the tree's
``priv/authorized_keys`` and ``priv/known_hosts`` are rendered from those rows and the node
table (``cluster.renderers``): two nodes joining at once never overwrite each other's line, and deleting a node (its
rows go with it) revokes its key and its known-hosts entry in the same change.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

from django.conf import settings
from django.db.models import Model

from authz.models import KeyMaterial
from replicator import bootstrap

AUTHORIZED_KEYS = "priv/authorized_keys"
KNOWN_HOSTS = "priv/known_hosts"
KEY_NAME = "id_ed25519"


def root_key_row(node: str) -> str:
    return f"nodes/{node}/ssh_root.pub"


def host_key_row(node: str) -> str:
    return f"nodes/{node}/ssh_host.pub"


def root_key_path() -> Path:
    return Path(settings.PVE_SSH_DIR) / KEY_NAME


def ensure_root_key() -> str:
    """This node's root key pair in PVE_SSH_DIR (created once, ed25519); returns the public line."""
    private = root_key_path()
    public = private.with_name(KEY_NAME + ".pub")
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{settings.PVE_NODE_NAME}", "-f", str(private)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        public.chmod(0o644)  # public on purpose, as ssh-keygen makes it without the node's umask 077
    return public.read_text().strip()


def host_public_key() -> str | None:
    """This node's sshd host key (``type base64``), or None when there is none to publish."""
    try:
        parts = Path(settings.PVE_SSH_HOST_KEY).read_text().split()
    except OSError:
        return None
    return " ".join(parts[:2]) if len(parts) >= 2 else None


def fingerprint(public_key: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a ``type base64 [comment]`` public key line."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def keys_of(node: str) -> dict[str, str]:
    """The public keys a node published, by row path."""
    paths = [root_key_row(node), host_key_row(node)]
    return dict(KeyMaterial.objects.using("cluster").filter(path__in=paths).values_list("path", "content"))


@bootstrap.register
def publish_node_keys(node_name: str) -> list[Model]:
    """Publish this node's root and host public keys when missing or changed (first start, join, new host keys)."""
    wanted: list[Model] = []
    present = keys_of(node_name)
    for path, value in ((root_key_row(node_name), ensure_root_key()), (host_key_row(node_name), host_public_key())):
        if value and present.get(path) != value:
            row = KeyMaterial.objects.using("cluster").filter(path=path).first() or KeyMaterial(path=path)
            row.content = value
            wanted.append(row)
    return wanted


def known_hosts_path() -> Path:
    return Path(settings.PVE_ETC_DIR) / KNOWN_HOSTS


def forget_node_rows(node: str) -> list[str]:
    """The key rows that go when ``node`` leaves the cluster (SSH keys, certificate, private directory)."""
    return list(
        KeyMaterial.objects.using("cluster").filter(path__startswith=f"nodes/{node}/").values_list("path", flat=True)
    )
