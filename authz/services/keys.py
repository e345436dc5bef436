"""The ticket signing key's rotation, and where the access-control key material is kept."""

from __future__ import annotations

from django.db import transaction

from authz.models import KeyMaterial
from replicator.exceptions import ConflictError

AUTHKEY = "priv/authkey.key"
AUTHKEY_PUB = "authkey.pub"
AUTHKEY_PUB_OLD = "authkey.pub.old"
WWW_KEY = "pve-www.key"

KEY_LIFETIME = 24 * 3600


def rotate_authkey_if_due(now: int) -> bool:
    """Replace the ticket signing key once it is 24 h old; the previous public key stays valid.

    Every node may try at once: the change set is based on the key's version, so one rotation
    wins and the others conflict, which is fine (they reload and use the winner's key).
    """
    from authz import keys

    current = {k.path: k for k in KeyMaterial.objects.filter(path__in=(AUTHKEY, AUTHKEY_PUB, AUTHKEY_PUB_OLD))}
    private = current.get(AUTHKEY)
    if private is None or AUTHKEY_PUB not in current or now - private.created < KEY_LIFETIME:
        return False
    new_private = keys.generate_rsa_key()
    old = current.get(AUTHKEY_PUB_OLD) or KeyMaterial(path=AUTHKEY_PUB_OLD)
    old.content, old.created = current[AUTHKEY_PUB].content, now
    private.content, private.created = new_private.decode(), now
    public = current[AUTHKEY_PUB]
    public.content, public.created = keys.public_key_pem(new_private).decode(), now
    try:
        with transaction.atomic(using="cluster"):
            old.save()
            private.save()
            public.save()
    except ConflictError:
        return False
    return True
