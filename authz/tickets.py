"""PVE authentication tickets, CSRF prevention tokens and API token headers.

Pure functions (no Django, no file or network I/O). Wire formats follow
PVE-INTERNALS.md section 7 and section 6.9:

* ticket: ``PVE:<userid>:<HEXTIME>::<base64 RSA signature>``; the userid has
  only ``:`` escaped as ``%3A``; the signature is RSA PKCS#1 v1.5 with SHA-256
  over the part before ``::`` (plus ``:<data>`` when secret data/AAD is used);
* CSRF token: ``<HEXTIME>:<unpadded base64 HMAC-SHA256 of "<HEXTIME>:<userid>">``;
* API token header: ``PVEAPIToken=<user>@<realm>!<name>=<secret>``.

User and token ids are checked by ``authz.ids`` (the one place ids are parsed).

Decisions worth knowing:

* The signed string is exactly the ticket text before ``::``, i.e. with the
  userid in its escaped form. For any *valid* userid this equals
  ``PVE:<userid>:<HEXTIME>`` because a valid userid cannot contain ``:``.
* ``verify_ticket`` only decodes ``%3A``; no general percent-decoding is done,
  so a user named e.g. ``r%6F%6Ft@pam`` can never be confused with
  ``root@pam``. Validation happens on the decoded value.
* The age window is exclusive at both ends (``min_age < age < max_age``).
  Clamping the window by the age of the signing key is left to the caller
  (pass a smaller ``max_age``).
* The legacy 27-character SHA-1 CSRF form is deliberately not accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.ids import is_valid_tokenid, is_valid_userid

TICKET_PREFIX = "PVE"
COOKIE_NAME = "PVEAuthCookie"
CSRF_HEADER = "CSRFPreventionToken"
API_TOKEN_PREFIX = "PVEAPIToken"
DEFAULT_MIN_AGE = -300
DEFAULT_MAX_AGE = 7200
_HEXTIME_RE = re.compile(r"[0-9A-F]{8}")
# Standard base64 alphabet, with padding (tickets) or without (Digest::SHA).
_B64_PADDED_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64_NOPAD_RE = re.compile(r"[A-Za-z0-9+/]+")

_TOKEN_HASH_SCHEME = "pbkdf2_sha256"
_TOKEN_HASH_ITERATIONS = 1000
_TOKEN_HASH_MAX_ITERATIONS = 1_000_000


class TicketError(ValueError):
    """Raised for any malformed, forged, expired or otherwise invalid credential."""


def _hextime(now: int) -> str:
    """Format an epoch as PVE's ``%08X`` timestamp."""
    if isinstance(now, bool) or not isinstance(now, int) or not 0 <= now <= 0xFFFFFFFF:
        raise TicketError("timestamp out of range")
    return f"{now:08X}"


def _age_ok(hextime: str, now: int, min_age: int, max_age: int) -> bool:
    """Return True if the HEXTIME lies inside the exclusive age window."""
    age = now - int(hextime, 16)
    return min_age < age < max_age


def _b64_nopad(raw: bytes) -> str:
    """Standard base64 without ``=`` padding, like Perl Digest::SHA's *_base64."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _utf8(text: str) -> bytes:
    """Encode text as UTF-8, mapping encoding failures to TicketError."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TicketError("invalid characters") from exc


# --------------------------------------------------------------------- tickets


@lru_cache(maxsize=16)
def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Load (and cache) an RSA private key from PEM."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TicketError("invalid private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TicketError("private key is not an RSA key")
    return key


@lru_cache(maxsize=16)
def _load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """Load (and cache) an RSA public key from PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TicketError("invalid public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise TicketError("public key is not an RSA key")
    return key


def _signed_bytes(plain: str, data: str | None) -> bytes:
    """Return the bytes covered by the ticket signature."""
    return _utf8(plain if data is None else f"{plain}:{data}")


def create_ticket(userid: str, private_key_pem: bytes, *, now: int, data: str | None = None) -> str:
    """Create a signed ``PVE:<userid>:<HEXTIME>::<sig>`` ticket for a valid user id."""
    if not is_valid_userid(userid):
        raise TicketError("invalid user id")
    if data is not None and not isinstance(data, str):
        raise TicketError("data must be a string")
    plain = f"{TICKET_PREFIX}:{userid.replace(':', '%3A')}:{_hextime(now)}"
    key = _load_private_key(bytes(private_key_pem))
    signature = key.sign(_signed_bytes(plain, data), padding.PKCS1v15(), hashes.SHA256())
    return f"{plain}::{base64.b64encode(signature).decode('ascii')}"


def _split_ticket(ticket: str) -> tuple[str, str, str, bytes]:
    """Split a ticket into (plain, userid, hextime, signature) or raise TicketError."""
    if not isinstance(ticket, str):
        raise TicketError("ticket must be a string")
    plain, sep, sig_b64 = ticket.partition("::")
    if not sep or not sig_b64:
        raise TicketError("missing signature")
    fields = plain.split(":")
    if len(fields) != 3:
        raise TicketError("wrong number of ticket fields")
    prefix, escaped_user, hextime = fields
    if prefix != TICKET_PREFIX:
        raise TicketError("wrong ticket prefix")
    if _HEXTIME_RE.fullmatch(hextime) is None:
        raise TicketError("invalid ticket timestamp")
    if _B64_PADDED_RE.fullmatch(sig_b64) is None:
        raise TicketError("invalid signature encoding")
    try:
        signature = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TicketError("invalid signature encoding") from exc
    # Reject non-canonical encodings (e.g. stray bits in the last character),
    # so one signature has exactly one accepted spelling.
    if not hmac.compare_digest(base64.b64encode(signature), sig_b64.encode("ascii")):
        raise TicketError("non-canonical signature encoding")
    userid = re.sub("%3A", ":", escaped_user, flags=re.IGNORECASE)
    if not is_valid_userid(userid):
        raise TicketError("invalid user id in ticket")
    return plain, userid, hextime, signature


def verify_ticket(
    ticket: str,
    public_keys: Sequence[bytes],
    *,
    now: int,
    data: str | None = None,
    min_age: int = DEFAULT_MIN_AGE,
    max_age: int = DEFAULT_MAX_AGE,
) -> str:
    """Verify a ticket against the given public keys (current first) and return its userid."""
    plain, userid, hextime, signature = _split_ticket(ticket)
    if data is not None and not isinstance(data, str):
        raise TicketError("data must be a string")
    if isinstance(public_keys, (bytes, str)):
        raise TicketError("public_keys must be a sequence of PEM blobs")
    message = _signed_bytes(plain, data)
    for pem in public_keys:
        if not isinstance(pem, (bytes, bytearray, memoryview)):
            raise TicketError("public keys must be PEM bytes")
        key = _load_public_key(bytes(pem))
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        break
    else:
        raise TicketError("invalid ticket signature")
    if not _age_ok(hextime, now, min_age, max_age):
        raise TicketError("ticket expired or not yet valid")
    return userid


def parse_cookie_value(raw: str) -> str:
    """URL-unquote a ``PVEAuthCookie`` value (``+`` is kept as is: it is base64)."""
    if not isinstance(raw, str):
        raise TicketError("cookie value must be a string")
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise TicketError("invalid percent-encoding in cookie") from exc


# ------------------------------------------------------------------------ CSRF


def csrf_secret(www_key: bytes) -> bytes:
    """Derive the CSRF secret: unpadded base64 of HMAC-SHA256(key=b"", msg=www_key).

    This mirrors Perl ``Digest::SHA::hmac_sha256_base64(<file contents>)`` with
    no key argument (an empty key). The full file contents are used byte for
    byte (including any trailing newline). The result is the 43 ASCII bytes of
    the base64 text; those bytes (not the raw digest) are the HMAC key used
    for CSRF tokens.
    """
    digest = hmac.new(b"", bytes(www_key), hashlib.sha256).digest()
    return _b64_nopad(digest).encode("ascii")


def _csrf_signature(hextime: str, userid: str, secret: bytes) -> str:
    """Return the unpadded base64 HMAC-SHA256 of ``"<HEXTIME>:<userid>"``."""
    mac = hmac.new(bytes(secret), _utf8(f"{hextime}:{userid}"), hashlib.sha256)
    return _b64_nopad(mac.digest())


def create_csrf_token(userid: str, secret: bytes, *, now: int) -> str:
    """Create a ``<HEXTIME>:<sig>`` CSRFPreventionToken for ``userid``."""
    if not isinstance(userid, str) or not userid:
        raise TicketError("invalid user id")
    hextime = _hextime(now)
    return f"{hextime}:{_csrf_signature(hextime, userid, secret)}"


def verify_csrf_token(
    token: str,
    userid: str,
    secret: bytes,
    *,
    now: int,
    min_age: int = DEFAULT_MIN_AGE,
    max_age: int = DEFAULT_MAX_AGE,
) -> bool:
    """Return True if ``token`` is a valid, unexpired CSRF token for ``userid``."""
    if not isinstance(token, str) or not isinstance(userid, str) or not userid:
        return False
    hextime, sep, sig = token.partition(":")
    if not sep or _HEXTIME_RE.fullmatch(hextime) is None or _B64_NOPAD_RE.fullmatch(sig) is None:
        return False
    try:
        expected = _csrf_signature(hextime, userid, secret)
    except TicketError:
        return False
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
        return False
    return _age_ok(hextime, now, min_age, max_age)


# ------------------------------------------------------------------ API tokens


def parse_api_token_header(value: str) -> tuple[str, str]:
    """Parse ``PVEAPIToken=<user@realm!name>=<secret>`` into (tokenid, secret)."""
    if not isinstance(value, str):
        raise TicketError("header value must be a string")
    value = value.strip(" \t")
    if not value.startswith(API_TOKEN_PREFIX) or len(value) <= len(API_TOKEN_PREFIX):
        raise TicketError("not a PVEAPIToken header")
    if value[len(API_TOKEN_PREFIX)] not in "= ":
        raise TicketError("not a PVEAPIToken header")
    rest = value[len(API_TOKEN_PREFIX) + 1 :]
    tokenid, sep, secret = rest.rpartition("=")
    if not sep or not secret:
        raise TicketError("missing token secret")
    if not is_valid_tokenid(tokenid):
        raise TicketError("invalid token id")
    if any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise TicketError("invalid token secret")
    return tokenid, secret


def new_token_secret() -> str:
    """Return a fresh random API token secret (a uuid4 string, like PVE)."""
    return str(uuid.uuid4())


def hash_token_secret(secret: str) -> str:
    """Hash a token secret as ``pbkdf2_sha256$<iterations>$<salt>$<hash>``.

    The secret is a random UUID4 (122 bits of entropy), so it cannot be
    brute-forced whatever the hash cost; key stretching only helps with
    low-entropy passwords. A salted PBKDF2 with a small iteration count keeps
    the per-request verification cheap while still not storing the secret in
    clear (PVE itself stores it verbatim in priv/token.cfg).
    """
    if not isinstance(secret, str) or not secret:
        raise TicketError("invalid token secret")
    salt = secrets.token_bytes(16)
    derived = hashlib.pbkdf2_hmac("sha256", _utf8(secret), salt, _TOKEN_HASH_ITERATIONS)
    return "$".join(
        (
            _TOKEN_HASH_SCHEME,
            str(_TOKEN_HASH_ITERATIONS),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(derived).decode("ascii"),
        )
    )


def verify_token_secret(secret: str, stored_hash: str) -> bool:
    """Return True if ``secret`` matches ``stored_hash`` (constant-time compare)."""
    if not isinstance(secret, str) or not isinstance(stored_hash, str) or not secret:
        return False
    parts = stored_hash.split("$")
    if len(parts) != 4 or parts[0] != _TOKEN_HASH_SCHEME:
        return False
    if re.fullmatch(r"[0-9]{1,7}", parts[1]) is None:
        return False
    iterations = int(parts[1])
    if not 1 <= iterations <= _TOKEN_HASH_MAX_ITERATIONS:
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
        candidate = _utf8(secret)
    except (binascii.Error, ValueError):
        return False
    derived = hashlib.pbkdf2_hmac("sha256", candidate, salt, iterations)
    return hmac.compare_digest(derived, expected)
