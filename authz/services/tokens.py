"""Managing API tokens: checked, delegated as Proxmox delegates, audited, one change set each.

Every function takes ``actor`` (who asks: a request's user, a token's user, or root@pam for
``pveum``), applies Proxmox's permission rules for it (``authz.delegation``), checks its input
fully before writing (bad input is a clear ``AccessError`` and changes nothing) and writes the
change together with its cluster-log entry in one ``transaction.atomic`` block (one change set).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from authz import audit, delegation, ids, tickets
from authz.exceptions import AccessError
from authz.models import ACLEntry, APIToken
from authz.services._validation import existing_user, text

CLUSTER = "cluster"


def add_token(
    userid: str, name: str, *, actor: Any, privsep: bool = True, expire: int = 0, comment: str = ""
) -> tuple[APIToken, str]:
    """A new token and its secret (returned once, only its hash is stored): oneself, or User.Modify.

    A token holds at most its user's privileges (privilege separation intersects, ``privsep=0``
    is exactly the user), so creating one never raises anyone above its user.
    """
    tokenid = ids.make_tokenid(userid, name)
    user = existing_user(userid)
    delegation.require_superuser_for(actor, userid, "the API tokens")
    delegation.check_self_or_user_group(actor, userid)
    if APIToken.objects.filter(tokenid=tokenid).exists():
        raise AccessError("Token already exists.")
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0 or (expire and expire <= time.time()):
        raise AccessError("expire must be in the future (or 0 = never)")
    secret = tickets.new_token_secret()
    token = APIToken(
        tokenid=tokenid,
        user=user,
        privsep=bool(privsep),
        expire=expire,
        comment=text("comment", comment),
        secret_hash=tickets.hash_token_secret(secret),
    )
    with transaction.atomic(using=CLUSTER):
        token.save(force_insert=True)
        audit.record(actor, f"added API token '{tokenid}' (privsep={int(token.privsep)})")
    return token, secret


def modify_token(
    tokenid: str, *, actor: Any, privsep: bool | None = None, expire: int | None = None, comment: str | None = None
) -> APIToken:
    """``PUT /access/users/{userid}/token/{tokenid}``: oneself (not a token), or User.Modify on the owner.

    Turning privilege separation off gives the token its user's privileges, never more, so the
    same rule as creating it holds.
    """
    token = APIToken.objects.filter(tokenid=tokenid).first()
    if token is None:
        raise AccessError(f"no such token '{tokenid}'")
    delegation.require_superuser_for(actor, token.user_id, "the API tokens")
    delegation.check_self_or_user_group(actor, token.user_id)
    changed: list[str] = []
    if expire is not None:
        if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0 or (expire and expire <= time.time()):
            raise AccessError("expire must be in the future (or 0 = never)")
        token.expire, changed = expire, [*changed, "expire"]
    if comment is not None:
        token.comment, changed = text("comment", comment), [*changed, "comment"]
    if privsep is not None:
        token.privsep, changed = bool(privsep), [*changed, f"privsep={int(bool(privsep))}"]
    with transaction.atomic(using=CLUSTER):
        token.save()
        audit.record(actor, f"changed API token '{tokenid}' ({', '.join(changed) or 'nothing'})")
    return token


def delete_token(tokenid: str, *, actor: Any) -> None:
    """The token and its ACL entries: oneself, or User.Modify on the owner (from the token's row)."""
    token = APIToken.objects.filter(tokenid=tokenid).first()
    if token is None:
        raise AccessError(f"no such token '{tokenid}'")
    delegation.require_superuser_for(actor, token.user_id, "the API tokens")
    delegation.check_self_or_user_group(actor, token.user_id)
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type="token", ugid=tokenid):
            entry.delete()
        token.delete()
        audit.record(actor, f"removed API token '{tokenid}'")
