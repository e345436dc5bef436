"""The ticket signing key rotates after 24 h; the previous key stays valid for tickets issued before."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from authz import authentication, tickets
from authz.exceptions import AuthenticationFailed
from authz.models import KeyMaterial, User
from authz.services import keys

pytestmark = [pytest.mark.usefixtures("replicator"), pytest.mark.postgres_too]
LIFETIME, GRACE = 7200, 300  # Proxmox's ticket lifetime and clock-skew grace


def age_key(seconds: int) -> None:
    key = KeyMaterial.objects.get(path=keys.AUTHKEY)
    key.created = int(time.time()) - seconds
    key.save()


def test_rotation_keeps_the_previous_key_for_verification():
    root = User.objects.get(userid="root@pam")
    age_key(3600)  # young: no rotation
    before = KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content
    first, _ = authentication.issue_ticket(root)
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content == before
    age_key(keys.KEY_LIFETIME + 60)
    second, _ = authentication.issue_ticket(root)  # rotates, then signs with the new key
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content != before
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB_OLD).content == before
    assert authentication.user_from_ticket(first).userid == "root@pam"  # previous key still accepted
    assert authentication.user_from_ticket(second).userid == "root@pam"
    age_key(keys.KEY_LIFETIME + 60)
    authentication.issue_ticket(root)  # a second rotation drops the first key
    with pytest.raises(AuthenticationFailed):
        authentication.user_from_ticket(first)
    assert authentication.user_from_ticket(second).userid == "root@pam"


def test_the_previous_key_only_accepts_tickets_issued_before_the_rotation():
    """Proxmox's rule: after a rotation the old key signs nothing new (a stolen old key is useless)."""
    root = User.objects.get(userid="root@pam")
    authentication.issue_ticket(root)  # a young key: no rotation yet
    old_private = KeyMaterial.objects.get(path=keys.AUTHKEY).content.encode()
    age_key(keys.KEY_LIFETIME + 60)
    rotation = int(time.time())
    assert keys.rotate_authkey_if_due(rotation)
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB_OLD).created == rotation
    new_private = KeyMaterial.objects.get(path=keys.AUTHKEY).content.encode()
    now = rotation + 1800  # half an hour after the rotation

    def accepted(private: bytes, issued: int) -> bool:
        ticket = tickets.create_ticket("root@pam", private, now=issued)
        try:
            return authentication.user_from_ticket(ticket, now=now).userid == "root@pam"
        except AuthenticationFailed:
            return False

    assert accepted(old_private, rotation - 600)  # issued before the rotation: valid for its 2 h
    assert accepted(old_private, rotation + 60)  # within the 5 minutes of clock skew
    assert not accepted(old_private, rotation + GRACE + 1)  # made after the rotation
    assert not accepted(old_private, now - 60)
    assert accepted(new_private, rotation + 30)
    assert not accepted(new_private, rotation - GRACE - 60)  # older than its key
    # Two hours after the rotation the previous key accepts nothing at all.
    later = rotation + LIFETIME + GRACE + 1
    with pytest.raises(AuthenticationFailed):
        authentication.user_from_ticket(tickets.create_ticket("root@pam", old_private, now=rotation - 1), now=later)


def test_concurrent_rotations_rotate_once():
    """Every node's beat tries at once: one rotation wins, the others change nothing."""
    age_key(keys.KEY_LIFETIME + 60)
    before = KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content
    barrier = threading.Barrier(4)

    def rotate() -> bool:
        try:
            barrier.wait()
            return keys.rotate_authkey_if_due(int(time.time()))
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: rotate(), range(4)))
    assert sorted(results) == [False, False, False, True]
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB_OLD).content == before  # rotated once
