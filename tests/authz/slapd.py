"""A real OpenLDAP ``slapd`` for the tests: its own CA, plain LDAP and LDAPS ports, a small directory."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-secret"
USERS = {"lara": "lara-pass", "mike": "mike-pass", "nina": "nina-pass"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_pki(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cluster.keys import certificates

    now = datetime.now(UTC)
    ca_cert, ca_key = certificates.generate_ca(f"test-ldap-{name}", now=now)
    cert, key = certificates.issue_node_certificate(ca_cert, ca_key, "localhost", ["127.0.0.1"], now=now)
    paths = directory / f"{name}-ca.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key"
    for path, data in zip(paths, (ca_cert, cert, key), strict=True):
        path.write_bytes(data)
        path.chmod(0o600)
    return paths


def ldif() -> str:
    people = "".join(
        f"""
dn: uid={uid},ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid.title()} Test
sn: Test
givenName: {uid.title()}
mail: {uid}@example.org
userPassword: {password}
"""
        for uid, password in USERS.items()
    )
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups
{people}
dn: cn=devs,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: devs
member: uid=lara,ou=people,{SUFFIX}
member: uid=mike,ou=people,{SUFFIX}

dn: cn=ops,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: ops
member: uid=nina,ou=people,{SUFFIX}
"""


class Slapd:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port, self.tls_port = free_port(), free_port()
        self.ca, cert, key = write_pki(directory, "good")
        self.other_ca = write_pki(directory, "other")[0]
        (directory / "db").mkdir()
        (directory / "slapd.conf").write_text(
            "\n".join(
                [
                    *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
                    f"pidfile {directory}/slapd.pid",
                    "modulepath /usr/lib/ldap",
                    "moduleload back_mdb",
                    f"TLSCACertificateFile {self.ca}",
                    f"TLSCertificateFile {cert}",
                    f"TLSCertificateKeyFile {key}",
                    "database mdb",
                    f'suffix "{SUFFIX}"',
                    f'rootdn "{ADMIN_DN}"',
                    f"rootpw {ADMIN_PASSWORD}",
                    f"directory {directory}/db",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        urls = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"
        self.process = subprocess.Popen(
            ["/usr/sbin/slapd", "-d", "0", "-f", str(self.directory / "slapd.conf"), "-h", urls],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "slapd.log", "wb"),  # noqa: SIM115  (owned by the child)
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.process.poll() is not None:
                raise RuntimeError((self.directory / "slapd.log").read_text())
            time.sleep(0.05)
        (self.directory / "data.ldif").write_text(ldif())
        subprocess.run(
            [
                "ldapadd",
                "-x",
                "-H",
                f"ldap://127.0.0.1:{self.port}",
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
                str(self.directory / "data.ldif"),
            ],
            check=True,
            capture_output=True,
        )

    def add_person(self, uid: str, password: str) -> None:
        """One more ``inetOrgPerson`` under ``ou=people``."""
        entry = f"""dn: uid={uid},ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid}
sn: {uid}
userPassword: {password}
"""
        subprocess.run(
            ["ldapadd", "-x", "-H", f"ldap://127.0.0.1:{self.port}", "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=entry,
            text=True,
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
