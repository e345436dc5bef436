"""Tests for authz.tickets: PVE tickets, CSRF tokens and API token headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import uuid
from collections.abc import Callable
from functools import cache

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from authz import tickets
from authz.tickets import (
    TicketError,
    create_csrf_token,
    create_ticket,
    csrf_secret,
    hash_token_secret,
    new_token_secret,
    parse_api_token_header,
    parse_cookie_value,
    verify_csrf_token,
    verify_ticket,
    verify_token_secret,
)

NOW = 1_700_000_000


@cache
def keypair(label: str) -> tuple[bytes, bytes]:
    """Return a cached (private PEM, public PEM) RSA pair for a label."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def test_ticket_format_and_roundtrip() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    plain, sig = ticket.split("::")
    assert plain == f"PVE:root@pam:{NOW:08X}"
    assert len(base64.b64decode(sig, validate=True)) == 256
    assert "\n" not in ticket
    assert verify_ticket(ticket, [pub], now=NOW) == "root@pam"


def test_signature_is_pkcs1v15_sha256_over_plain() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("alice@pve", priv, now=NOW)
    plain, sig = ticket.split("::")
    key = serialization.load_pem_public_key(pub)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(base64.b64decode(sig), plain.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_externally_signed_ticket_verifies() -> None:
    priv, pub = keypair("current")
    key = serialization.load_pem_private_key(priv, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    plain = f"PVE:bob@ldap-corp:{NOW - 10:08X}"
    sig = key.sign(plain.encode(), padding.PKCS1v15(), hashes.SHA256())
    ticket = f"{plain}::{base64.b64encode(sig).decode()}"
    assert verify_ticket(ticket, [pub], now=NOW) == "bob@ldap-corp"


def test_sha1_signature_rejected() -> None:
    priv, pub = keypair("current")
    key = serialization.load_pem_private_key(priv, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    plain = f"PVE:root@pam:{NOW:08X}"
    sig = key.sign(plain.encode(), padding.PKCS1v15(), hashes.SHA1())
    with pytest.raises(TicketError):
        verify_ticket(f"{plain}::{base64.b64encode(sig).decode()}", [pub], now=NOW)


def test_data_is_signed_but_not_included() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW, data="secret-aad")
    assert "secret-aad" not in ticket
    assert ticket.count(":") == 4
    assert verify_ticket(ticket, [pub], now=NOW, data="secret-aad") == "root@pam"
    with pytest.raises(TicketError):
        verify_ticket(ticket, [pub], now=NOW)
    with pytest.raises(TicketError):
        verify_ticket(ticket, [pub], now=NOW, data="other")
    plain_ticket = create_ticket("root@pam", priv, now=NOW)
    with pytest.raises(TicketError):
        verify_ticket(plain_ticket, [pub], now=NOW, data="secret-aad")


def test_old_key_fallback_and_order() -> None:
    old_priv, old_pub = keypair("old")
    _, cur_pub = keypair("current")
    ticket = create_ticket("root@pam", old_priv, now=NOW)
    assert verify_ticket(ticket, [cur_pub, old_pub], now=NOW) == "root@pam"
    with pytest.raises(TicketError):
        verify_ticket(ticket, [cur_pub], now=NOW)


def test_other_cluster_key_rejected() -> None:
    foreign_priv, _ = keypair("foreign-cluster")
    _, cur_pub = keypair("current")
    _, old_pub = keypair("old")
    ticket = create_ticket("root@pam", foreign_priv, now=NOW)
    with pytest.raises(TicketError, match="signature"):
        verify_ticket(ticket, [cur_pub, old_pub], now=NOW)


def test_no_keys_rejects() -> None:
    priv, _ = keypair("current")
    with pytest.raises(TicketError):
        verify_ticket(create_ticket("root@pam", priv, now=NOW), [], now=NOW)


def test_forged_user_rejected() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("alice@pve", priv, now=NOW)
    forged = ticket.replace("alice@pve", "root@pam", 1)
    with pytest.raises(TicketError):
        verify_ticket(forged, [pub], now=NOW)


def test_forged_time_rejected() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW - 7000)
    forged = ticket.replace(f"{NOW - 7000:08X}", f"{NOW:08X}", 1)
    assert forged != ticket
    with pytest.raises(TicketError):
        verify_ticket(forged, [pub], now=NOW)


def test_flipped_signature_bit_rejected() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    plain, sig = ticket.split("::")
    raw = bytearray(base64.b64decode(sig))
    raw[100] ^= 0x01
    with pytest.raises(TicketError):
        verify_ticket(f"{plain}::{base64.b64encode(bytes(raw)).decode()}", [pub], now=NOW)


def test_truncated_tickets_rejected() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    for cut in range(len(ticket)):
        with pytest.raises(TicketError):
            verify_ticket(ticket[:cut], [pub], now=NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: "PVX" + t[3:],
        lambda t: "pve" + t[3:],
        lambda t: t.replace("::", ":", 1),
        lambda t: t.replace("::", ":::", 1),
        lambda t: t + "::extra",
        lambda t: t.replace("root@pam:", "root@pam:extra:", 1),
        lambda t: t.replace("PVE:", "PVE::", 1),
        lambda t: t.replace(f"{NOW:08X}", f"{NOW:08x}", 1),
        lambda t: t.replace(f"{NOW:08X}", f"{NOW:X}0", 1),
        lambda t: t.replace(f"{NOW:08X}", "0" + f"{NOW:08X}", 1),
        lambda t: t.replace(f"{NOW:08X}", "+" + f"{NOW:07X}", 1),
        lambda t: t.rstrip("=") if t.endswith("=") else t + "=",
        lambda t: t + "A",
        lambda t: t + "\n",
        lambda t: " " + t,
        lambda t: t.replace("::", "::!", 1),
    ],
)
def test_malformed_tickets_rejected(mutate: Callable[[str], str]) -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    mutated = mutate(ticket)
    assert mutated != ticket
    with pytest.raises(TicketError):
        verify_ticket(mutated, [pub], now=NOW)


def test_non_canonical_base64_rejected() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    plain, sig = ticket.split("::")
    # 256 bytes encode to 344 chars ending in "=="; the char before the
    # padding has 4 unused low bits which a lax decoder ignores.
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    tweaked = sig[:-3] + alphabet[last ^ 0x01] + "=="
    assert base64.b64decode(tweaked) == base64.b64decode(sig)
    with pytest.raises(TicketError):
        verify_ticket(f"{plain}::{tweaked}", [pub], now=NOW)


def test_age_window() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    assert verify_ticket(ticket, [pub], now=NOW + 7199) == "root@pam"
    assert verify_ticket(ticket, [pub], now=NOW - 299) == "root@pam"
    for now in (NOW + 7200, NOW + 100_000, NOW - 300, NOW - 10_000):
        with pytest.raises(TicketError, match="expired"):
            verify_ticket(ticket, [pub], now=now)
    assert verify_ticket(ticket, [pub], now=NOW + 50, max_age=60) == "root@pam"
    with pytest.raises(TicketError):
        verify_ticket(ticket, [pub], now=NOW + 61, max_age=60)
    with pytest.raises(TicketError):
        verify_ticket(ticket, [pub], now=NOW - 1, min_age=0)


@pytest.mark.parametrize(
    "userid",
    [
        "root@pam",
        "a@bc",
        "user.name-1@my_realm.example",
        "r%6F%6Ft@pam",
        "x@" + "r" * 62,
    ],
)
def test_valid_userids_roundtrip(userid: str) -> None:
    priv, pub = keypair("current")
    assert verify_ticket(create_ticket(userid, priv, now=NOW), [pub], now=NOW) == userid


def test_percent_escapes_are_not_decoded_beyond_colon() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("r%6F%6Ft@pam", priv, now=NOW)
    assert verify_ticket(ticket, [pub], now=NOW) != "root@pam"


@pytest.mark.parametrize(
    "userid",
    [
        "root",
        "root@",
        "@pam",
        "root@p",
        "root@1pam",
        "ro ot@pam",
        "ro/ot@pam",
        "ro:ot@pam",
        "root@pam!token",
        "x@" + "r" * 63,
        "",
        "root@pa m",
        "root@pam\n",
    ],
)
def test_invalid_userids(userid: str) -> None:
    priv, _ = keypair("current")
    with pytest.raises(TicketError):
        create_ticket(userid, priv, now=NOW)
    assert not tickets.is_valid_userid(userid)


def test_signed_ticket_with_invalid_userid_rejected() -> None:
    priv, pub = keypair("current")
    key = serialization.load_pem_private_key(priv, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    for user in ("root@pam!tok", "ro%3Aot@pam", "root@pam%2Fx", "x@" + "r" * 63):
        plain = f"PVE:{user}:{NOW:08X}"
        sig = key.sign(plain.encode(), padding.PKCS1v15(), hashes.SHA256())
        with pytest.raises(TicketError, match="user id"):
            verify_ticket(f"{plain}::{base64.b64encode(sig).decode()}", [pub], now=NOW)


def test_bad_key_material() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for keys in ([b"garbage"], [ec_pub], pub, ["not bytes"]):
        with pytest.raises(TicketError):
            verify_ticket(ticket, keys, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TicketError):
        create_ticket("root@pam", b"not a key", now=NOW)
    with pytest.raises(TicketError):
        create_ticket("root@pam", priv, now=-1)
    with pytest.raises(TicketError):
        create_ticket("root@pam", priv, now=2**32)


def test_fuzz_random_input_only_raises_ticket_error() -> None:
    priv, pub = keypair("current")
    good = create_ticket("root@pam", priv, now=NOW)
    rng = random.Random(20240501)
    alphabet = "PVE:root@pam0123456789ABCDEF+/=%!\n \x00é\udcff"
    for i in range(600):
        kind = i % 4
        if kind == 0:
            candidate = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400))).decode(
                "utf-8", errors="surrogateescape"
            )
        elif kind == 1:
            candidate = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        elif kind == 2:
            chars = list(good)
            for _ in range(rng.randrange(1, 6)):
                chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 127))
            candidate = "".join(chars)
        else:
            pos = rng.randrange(len(good))
            candidate = good[:pos] + good[pos + rng.randrange(1, 5) :]
        if candidate == good:
            continue
        with pytest.raises(TicketError):
            verify_ticket(candidate, [pub], now=NOW, data=rng.choice([None, "x", "\udcff"]))
    for bad in (None, 42, b"PVE:root@pam", ["PVE"]):
        with pytest.raises(TicketError):
            verify_ticket(bad, [pub], now=NOW)  # type: ignore[arg-type]


def test_parse_cookie_value() -> None:
    priv, pub = keypair("current")
    ticket = create_ticket("root@pam", priv, now=NOW)
    quoted = ticket.replace("%", "%25").replace(":", "%3A").replace("+", "%2B").replace("/", "%2F")
    quoted = quoted.replace("=", "%3D").replace("@", "%40")
    assert parse_cookie_value(quoted) == ticket
    assert parse_cookie_value(ticket) == ticket
    assert parse_cookie_value("a+b") == "a+b"
    assert parse_cookie_value('"PVE%3Ax"') == "PVE:x"
    assert verify_ticket(parse_cookie_value(quoted), [pub], now=NOW) == "root@pam"
    with pytest.raises(TicketError):
        parse_cookie_value("%FF%FE")
    with pytest.raises(TicketError):
        parse_cookie_value(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ CSRF


def test_csrf_secret_matches_digest_sha_semantics() -> None:
    www = b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
    secret = csrf_secret(www)
    expected = base64.b64encode(hmac.new(b"", www, hashlib.sha256).digest()).rstrip(b"=")
    assert secret == expected
    assert len(secret) == 43 and b"=" not in secret
    assert csrf_secret(www + b"x") != secret


def test_csrf_roundtrip_and_format() -> None:
    secret = csrf_secret(b"www-key-contents")
    token = create_csrf_token("root@pam", secret, now=NOW)
    hextime, sig = token.split(":")
    assert hextime == f"{NOW:08X}"
    mac = hmac.new(secret, f"{hextime}:root@pam".encode(), hashlib.sha256).digest()
    assert sig == base64.b64encode(mac).decode().rstrip("=")
    assert len(sig) == 43
    assert verify_csrf_token(token, "root@pam", secret, now=NOW)
    assert verify_csrf_token(token, "root@pam", secret, now=NOW + 7199)
    assert verify_csrf_token(token, "root@pam", secret, now=NOW - 299)


def test_csrf_rejections() -> None:
    secret = csrf_secret(b"www-key-contents")
    other = csrf_secret(b"another-cluster")
    token = create_csrf_token("root@pam", secret, now=NOW)
    hextime, sig = token.split(":")
    assert not verify_csrf_token(token, "alice@pve", secret, now=NOW)
    assert not verify_csrf_token(token, "root@pam", other, now=NOW)
    assert not verify_csrf_token(token, "root@pam", secret, now=NOW + 7200)
    assert not verify_csrf_token(token, "root@pam", secret, now=NOW - 300)
    assert not verify_csrf_token(token + "=", "root@pam", secret, now=NOW)
    assert not verify_csrf_token(f"{NOW + 1:08X}:{sig}", "root@pam", secret, now=NOW)
    assert not verify_csrf_token(f"{hextime.lower()}:{sig}", "root@pam", secret, now=NOW)
    assert not verify_csrf_token(f"{hextime}:{sig[:27]}", "root@pam", secret, now=NOW)
    assert not verify_csrf_token(hextime, "root@pam", secret, now=NOW)
    assert not verify_csrf_token("", "root@pam", secret, now=NOW)
    assert not verify_csrf_token(token, "", secret, now=NOW)
    assert not verify_csrf_token(None, "root@pam", secret, now=NOW)  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(300):
        chars = list(token)
        chars[rng.randrange(len(chars))] = chr(rng.randrange(0, 0x3000))
        candidate = "".join(chars)
        if candidate != token:
            assert not verify_csrf_token(candidate, "root@pam", secret, now=NOW)


# ------------------------------------------------------------------ API tokens


def test_parse_api_token_header() -> None:
    secret = str(uuid.uuid4())
    assert parse_api_token_header(f"PVEAPIToken=root@pam!monitoring={secret}") == (
        "root@pam!monitoring",
        secret,
    )
    assert parse_api_token_header(f"PVEAPIToken root@pam!mon={secret}") == (
        "root@pam!mon",
        secret,
    )
    assert parse_api_token_header(f"  PVEAPIToken=a=b@pve!tk={secret} ") == (
        "a=b@pve!tk",
        secret,
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "PVEAPIToken",
        "PVEAPIToken=",
        "PVEAPIToken=root@pam!mon",
        "PVEAPIToken=root@pam!mon=",
        "PVEAPIToken:root@pam!mon=s",
        "pveapitoken=root@pam!mon=s",
        "Bearer root@pam!mon=s",
        "PVEAPITokenroot@pam!mon=s",
        "PVEAPIToken=root@pam=s",
        "PVEAPIToken=root@pam!=s",
        "PVEAPIToken=root@pam!m=s",
        "PVEAPIToken=root@pam!1mon=s",
        "PVEAPIToken=root@pam!mo n=s",
        "PVEAPIToken=root!mon=s",
        "PVEAPIToken=root@pam!mon!x=s",
        "PVEAPIToken=root@pam!mon=se cret",
        "PVEAPIToken=root@pam!mon=se\x00cret",
        "PVEAPIToken=" + "x" * 70 + "@pam!mon=s",
    ],
)
def test_parse_api_token_header_rejects(value: str) -> None:
    with pytest.raises(TicketError):
        parse_api_token_header(value)


def test_parse_api_token_header_fuzz() -> None:
    rng = random.Random(99)
    base = "PVEAPIToken=root@pam!mon=1234"
    for _ in range(300):
        candidate = "".join(rng.choice(base + " =!@\t\udcff") for _ in range(rng.randrange(40)))
        try:
            tokenid, secret = parse_api_token_header(candidate)
        except TicketError:
            continue
        assert tickets.is_valid_tokenid(tokenid) and secret and "=" not in secret


def test_token_secret_hashing() -> None:
    secret = new_token_secret()
    assert str(uuid.UUID(secret)) == secret and uuid.UUID(secret).version == 4
    assert new_token_secret() != secret
    stored = hash_token_secret(secret)
    assert secret not in stored
    assert stored.startswith("pbkdf2_sha256$")
    assert hash_token_secret(secret) != stored  # salted
    assert verify_token_secret(secret, stored)
    assert not verify_token_secret(new_token_secret(), stored)
    assert not verify_token_secret(secret[:-1], stored)
    assert not verify_token_secret("", stored)
    scheme, iters, salt, digest = stored.split("$")
    for bad in (
        "",
        "garbage",
        f"sha1${iters}${salt}${digest}",
        f"{scheme}$0${salt}${digest}",
        f"{scheme}$99999999${salt}${digest}",
        f"{scheme}$²${salt}${digest}",
        f"{scheme}${iters}$!!${digest}",
        f"{scheme}${iters}${salt}$",
        f"{scheme}${iters}${salt}${digest}$x",
        secret,
    ):
        assert not verify_token_secret(secret, bad)
    with pytest.raises(TicketError):
        hash_token_secret("")
