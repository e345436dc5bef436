"""Key generation for the key material authz keeps: the ticket signing key pair and the www key.

Pure functions built on ``cryptography`` (no Django, no file I/O); the cluster's certificates
(``cluster.keys.certificates``) build on the same helpers. The outputs correspond to the files listed in
PVE-INTERNALS.md section 1.7:

* ``priv/authkey.key`` / ``authkey.pub``: :func:`generate_rsa_key` / :func:`public_key_pem`;
* ``pve-www.key``: :func:`generate_www_key`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUTHKEY_BITS = 2048
WWW_KEY_BITS = 2048


def generate_rsa_key(bits: int = AUTHKEY_BITS) -> bytes:
    """Generate an RSA private key as unencrypted PKCS#8 PEM."""
    if bits < 2048:
        raise ValueError("RSA keys must have at least 2048 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private_pem(key)


def public_key_pem(private_pem: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo PEM (``BEGIN PUBLIC KEY``) of a private key PEM."""
    key = load_rsa_private_key(private_pem)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_rsa_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA private key from PEM or raise ValueError."""
    key = serialization.load_pem_private_key(bytes(pem), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    return key


def generate_www_key() -> bytes:
    """Generate the pve-www.key contents: a 2048-bit RSA private key PEM, as PVE writes.

    The file is only ever used as HMAC input for the CSRF secret, so any
    high-entropy blob would do; a PEM RSA key keeps the file identical in kind
    to what PVE itself creates (and far exceeds 256 bits of entropy).
    """
    return generate_rsa_key(WWW_KEY_BITS)
