"""Tests for cluster.keys.certificates: RSA keys, cluster CA, node certificates, TLS handshake."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.keys import generate_rsa_key, generate_www_key, public_key_pem
from authz.tickets import create_ticket, csrf_secret, verify_ticket
from cluster.keys.certificates import certificate_fingerprint, generate_ca, issue_node_certificate

NOW = datetime.now(UTC).replace(microsecond=0)
ADDRESSES = ["192.0.2.10", "2001:db8::10", "pve1.example.com"]


@cache
def ca(label: str) -> tuple[bytes, bytes]:
    """Return a cached (cert PEM, key PEM) CA for a label."""
    return generate_ca(f"cluster-{label}", now=NOW, key_bits=2048)


@cache
def node(label: str, name: str = "pve1") -> tuple[bytes, bytes]:
    """Return a cached (cert PEM, key PEM) node certificate signed by CA ``label``."""
    ca_cert, ca_key = ca(label)
    return issue_node_certificate(ca_cert, ca_key, name, ADDRESSES, now=NOW)


def test_rsa_key_roundtrip() -> None:
    priv = generate_rsa_key()
    assert priv.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(priv, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    pub = public_key_pem(priv)
    assert pub.startswith(b"-----BEGIN PUBLIC KEY-----")
    pub_key = serialization.load_pem_public_key(pub)
    assert isinstance(pub_key, rsa.RSAPublicKey)
    sig = key.sign(b"msg", padding.PKCS1v15(), hashes.SHA256())
    pub_key.verify(sig, b"msg", padding.PKCS1v15(), hashes.SHA256())
    other_pub = serialization.load_pem_public_key(public_key_pem(generate_rsa_key()))
    assert isinstance(other_pub, rsa.RSAPublicKey)
    with pytest.raises(InvalidSignature):
        other_pub.verify(sig, b"msg", padding.PKCS1v15(), hashes.SHA256())


def test_rsa_key_rejects_weak_size() -> None:
    with pytest.raises(ValueError):
        generate_rsa_key(1024)
    with pytest.raises(ValueError):
        public_key_pem(b"garbage")


def test_authkey_pair_works_for_tickets() -> None:
    priv = generate_rsa_key()
    ticket = create_ticket("root@pam", priv, now=1_700_000_000)
    assert verify_ticket(ticket, [public_key_pem(priv)], now=1_700_000_000) == "root@pam"


def test_ca_certificate_fields() -> None:
    cert_pem, key_pem = ca("a")
    cert = x509.load_pem_x509_certificate(cert_pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ("Proxmox Virtual Environment")
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ("PVE Cluster Manager CA")
    ou = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", str(ou))
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=3650)
    cert.verify_directly_issued_by(cert)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == cert.public_key()


def test_ca_ou_is_random_and_default_key_size() -> None:
    cert_a = x509.load_pem_x509_certificate(ca("a")[0])
    cert_b = x509.load_pem_x509_certificate(ca("b")[0])
    assert cert_a.subject != cert_b.subject
    default_cert, _ = generate_ca("big", now=NOW)
    pub = x509.load_pem_x509_certificate(default_cert).public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 4096
    with pytest.raises(ValueError):
        generate_ca("", now=NOW)


def test_node_certificate_verifies_against_ca() -> None:
    ca_cert = x509.load_pem_x509_certificate(ca("a")[0])
    cert = x509.load_pem_x509_certificate(node("a")[0])
    cert.verify_directly_issued_by(ca_cert)
    other_ca = x509.load_pem_x509_certificate(ca("b")[0])
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(other_ca)


def test_node_certificate_fields_and_sans() -> None:
    cert_pem, key_pem = node("a")
    cert = x509.load_pem_x509_certificate(cert_pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pve1"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ("PVE Cluster Node")
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == ("PVE Cluster Node")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "pve1",
        "localhost",
        "pve1.example.com",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.0.2.10"),
        ipaddress.ip_address("2001:db8::10"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=730)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert key.public_key() == cert.public_key()
    ca_cert = x509.load_pem_x509_certificate(ca("a")[0])
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_node_certificate_serial_and_dedup() -> None:
    ca_cert, ca_key = ca("a")
    cert_pem, _ = issue_node_certificate(
        ca_cert, ca_key, "n2", ["127.0.0.1", "n2", "localhost"], now=NOW, serial=0x1234
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.serial_number == 0x1234
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n2", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_node_certificate_never_outlives_ca() -> None:
    ca_cert, ca_key = ca("a")
    late = NOW + timedelta(days=3650 - 100)
    cert = x509.load_pem_x509_certificate(issue_node_certificate(ca_cert, ca_key, "pve1", [], now=late)[0])
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    with pytest.raises(ValueError):
        issue_node_certificate(ca_cert, ca_key, "pve1", [], now=NOW + timedelta(days=3651))


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("", []),
        ("bad name", []),
        ("pve1.example", []),
        ("-pve", []),
        ("pve1", ["not a host!"]),
        ("pve1", [""]),
    ],
)
def test_node_certificate_rejects_bad_input(name: str, addresses: list[str]) -> None:
    ca_cert, ca_key = ca("a")
    with pytest.raises(ValueError):
        issue_node_certificate(ca_cert, ca_key, name, addresses, now=NOW)


def test_node_certificate_rejects_mismatched_ca_key() -> None:
    with pytest.raises(ValueError, match="does not match"):
        issue_node_certificate(ca("a")[0], ca("b")[1], "pve1", [], now=NOW)


def test_certificate_fingerprint() -> None:
    cert_pem, _ = node("a")
    fp = certificate_fingerprint(cert_pem)
    assert re.fullmatch(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    assert fp.replace(":", "") == digest.finalize().hex().upper()
    assert fp != certificate_fingerprint(node("b")[0])


def test_www_key() -> None:
    first = generate_www_key()
    second = generate_www_key()
    assert first != second
    assert isinstance(serialization.load_pem_private_key(first, password=None), rsa.RSAPrivateKey)
    assert csrf_secret(first) != csrf_secret(second)


def _contexts(tmp_path: Path, server_label: str, client_label: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Build a TLS 1.3 server context and a client context trusting a CA."""
    cert_pem, key_pem = node(server_label)
    (tmp_path / "pve-ssl.pem").write_bytes(cert_pem)
    (tmp_path / "pve-ssl.key").write_bytes(key_pem)
    (tmp_path / "ca.pem").write_bytes(ca(client_label)[0])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(tmp_path / "pve-ssl.pem", tmp_path / "pve-ssl.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> tuple[str | None, dict]:
    """Run a real TLS handshake over a socketpair and echo one message."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(tls.recv(64).upper())
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=hostname) as tls:
            tls.sendall(b"ping")
            assert tls.recv(64) == b"PING"
            result = tls.version(), tls.getpeercert()
    finally:
        client_sock.close()
        thread.join(10)
        server_sock.close()
    assert not errors
    return result


def test_tls_handshake_with_node_name(tmp_path: Path) -> None:
    server, client = _contexts(tmp_path, "a", "a")
    version, peer = _handshake(server, client, "pve1")
    assert version == "TLSv1.3"
    assert ("commonName", "pve1") in [item for rdn in peer["subject"] for item in rdn]


@pytest.mark.parametrize("hostname", ["localhost", "192.0.2.10", "2001:db8::10", "127.0.0.1"])
def test_tls_handshake_with_san_addresses(tmp_path: Path, hostname: str) -> None:
    server, client = _contexts(tmp_path, "a", "a")
    assert _handshake(server, client, hostname)[0] == "TLSv1.3"


def test_tls_handshake_wrong_hostname_fails(tmp_path: Path) -> None:
    server, client = _contexts(tmp_path, "a", "a")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "pve2")


def test_tls_handshake_other_cluster_ca_fails(tmp_path: Path) -> None:
    server, client = _contexts(tmp_path, "a", "b")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "pve1")
