"""Cluster certificates: the cluster CA and the node certificates it signs.

Pure functions built on ``cryptography`` (no Django, no file I/O); the generic key generators
(ticket signing keys, www key) are in ``authz.keys``, beside the key material. The outputs
correspond to the files listed in PVE-INTERNALS.md section 1.7:

* ``pve-root-ca.pem`` / ``priv/pve-root-ca.key``: :func:`generate_ca`;
* ``nodes/<node>/pve-ssl.pem`` / ``pve-ssl.key``: :func:`issue_node_certificate`.

Certificates start being valid at ``now`` exactly (no backdating); node
certificates never outlive the CA that signs them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.keys import load_rsa_private_key, private_pem

CA_COMMON_NAME = "Proxmox Virtual Environment"
CA_ORGANIZATION = "PVE Cluster Manager CA"
NODE_ORGANIZATION = "PVE Cluster Node"
NODE_ORGANIZATIONAL_UNIT = "PVE Cluster Node"
CA_VALIDITY = timedelta(days=3650)
NODE_VALIDITY = timedelta(days=730)
CA_KEY_BITS = 4096
NODE_KEY_BITS = 2048

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_NODE_NAME_RE = re.compile(_LABEL)
_DNS_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _utc(now: datetime) -> datetime:
    """Return ``now`` as an aware UTC datetime (naive values are taken as UTC)."""
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def _public_der(key: CertificatePublicKeyTypes) -> bytes:
    """Return the DER SubjectPublicKeyInfo of a public key."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_ca(cluster_name: str, *, now: datetime, key_bits: int = CA_KEY_BITS) -> tuple[bytes, bytes]:
    """Create the self-signed cluster CA and return (cert PEM, key PEM).

    The subject follows PVE (CN/OU=random uuid/O); ``cluster_name`` is only
    validated, it does not appear in the certificate, as in PVE.
    """
    if not isinstance(cluster_name, str) or not cluster_name.strip():
        raise ValueError("cluster name must be a non-empty string")
    start = _utc(now)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(uuid.uuid4())),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANIZATION),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), private_pem(key)


def _subject_alt_names(node_name: str, addresses: Sequence[str]) -> list[x509.GeneralName]:
    """Build the de-duplicated SAN list for a node certificate."""
    if isinstance(addresses, (str, bytes)):
        raise TypeError("addresses must be a sequence of strings")
    names: list[x509.GeneralName] = []

    def add(entry: x509.GeneralName) -> None:
        if entry not in names:
            names.append(entry)

    add(x509.DNSName(node_name))
    add(x509.DNSName("localhost"))
    for address in addresses:
        if not isinstance(address, str) or not address:
            raise ValueError(f"invalid address {address!r}")
        try:
            add(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            if _DNS_NAME_RE.fullmatch(address) is None or len(address) > 253:
                raise ValueError(f"invalid address {address!r}") from None
            add(x509.DNSName(address))
    add(x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")))
    return names


def issue_node_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    node_name: str,
    addresses: Sequence[str],
    *,
    now: datetime,
    serial: int | None = None,
) -> tuple[bytes, bytes]:
    """Issue a node TLS certificate signed by the cluster CA; return (cert PEM, key PEM)."""
    if not isinstance(node_name, str) or _NODE_NAME_RE.fullmatch(node_name) is None:
        raise ValueError(f"invalid node name {node_name!r}")
    if serial is not None and not 0 < serial < 2**159:
        raise ValueError("serial must be a positive integer below 2**159")
    ca_cert = x509.load_pem_x509_certificate(bytes(ca_cert_pem))
    ca_key = load_rsa_private_key(ca_key_pem)
    if _public_der(ca_key.public_key()) != _public_der(ca_cert.public_key()):
        raise ValueError("CA key does not match the CA certificate")
    start = _utc(now)
    end = min(start + NODE_VALIDITY, ca_cert.not_valid_after_utc)
    if end <= start:
        raise ValueError("CA certificate has expired")
    key = rsa.generate_private_key(public_exponent=65537, key_size=NODE_KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, NODE_ORGANIZATIONAL_UNIT),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, node_name),
        ]
    )
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(_subject_alt_names(node_name, addresses)),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), private_pem(key)


def certificate_fingerprint(cert_pem: bytes) -> str:
    """Return the SHA-256 fingerprint of a PEM certificate as ``AA:BB:...`` (uppercase)."""
    cert = x509.load_pem_x509_certificate(bytes(cert_pem))
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
