"""First start: the built-in realms and ``root@pam`` with its initial password."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from django.conf import settings
from django.db.models import Model

from authz.models import SUPERUSER, Realm, User
from replicator import bootstrap
from replicator.files import atomic_write

log = logging.getLogger(__name__)

BUILTIN_REALMS = {
    "pam": ("pam", "Linux PAM standard authentication"),
    "pve": ("pve", "Proxmox VE authentication server"),
}


@bootstrap.register
def builtin_access(node_name: str) -> list[Model]:
    """Create the pam and pve realms and root@pam when missing."""
    wanted: list[Model] = []
    existing = set(Realm.objects.using("cluster").values_list("realm", flat=True))
    for realm, (type_, comment) in BUILTIN_REALMS.items():
        if realm not in existing:
            wanted.append(Realm(realm=realm, type=type_, comment=comment, default=(realm == "pve")))
    if not User.objects.using("cluster").filter(userid=SUPERUSER).exists():
        password = settings.PVE_ROOT_PASSWORD
        if not password:
            password = secrets.token_urlsafe(12)
            _announce_generated_password(password)
        root = User(userid=SUPERUSER, realm_id="pam", email="root@localhost", comment="Superuser")
        root.set_password(password)
        wanted.append(root)
    return wanted


def _announce_generated_password(password: str) -> None:
    """Keep the generated password in a 0600 file and show it once on the terminal that started the node.

    Never in a log or the journal: the log line says only where the file is.
    """
    path = Path(settings.PVE_DATA_DIR) / "initial-root-password"
    atomic_write(path, (password + "\n").encode(), mode=0o600)  # replaces any file an older release left readable
    shown = bootstrap.tell_terminal(
        f"generated password for root@pam: {password} (also in {path}; change it after the first login)\n"
    )
    log.warning(
        "generated a password for root@pam: it is in %s (readable by this node's user only)%s; "
        "change it after the first login",
        path,
        ", and was shown on the terminal that started the node" if shown else "",
    )
