"""First start: datacenter options, this node's row, the cluster keys and its certificate."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Max, Model

from authz.models import KeyMaterial
from cluster.models import ClusterLogEntry, ClusterSettings, CorosyncConfig, Node
from replicator import bootstrap

AUTHKEY = "priv/authkey.key"
AUTHKEY_PUB = "authkey.pub"
WWW_KEY = "pve-www.key"
CA_CERT = "pve-root-ca.pem"
CA_KEY = "priv/pve-root-ca.key"


def node_cert_path(node: str) -> str:
    return f"nodes/{node}/pve-ssl.pem"


def node_key_path(node: str) -> str:
    """Private keys stay under a private directory (0600), unlike Proxmox's ``nodes/<n>/pve-ssl.key``."""
    return f"nodes/{node}/priv/pve-ssl.key"


def local_address() -> str:
    """The address other nodes reach this node on: PVE_NODE_ADDRESS, else the host name's."""
    if settings.PVE_NODE_ADDRESS:
        return settings.PVE_NODE_ADDRESS
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def node_certificate(
    node_name: str, address: str, present: dict[str, str], now: datetime
) -> tuple[list[KeyMaterial], str]:
    """A new certificate and key for ``node_name`` from the cluster CA (rows to save), and its fingerprint."""
    from cluster.keys import certificates

    cert, key = certificates.issue_node_certificate(
        present[CA_CERT].encode(), present[CA_KEY].encode(), node_name, [address], now=now
    )
    rows = []
    for path, content in ((node_cert_path(node_name), cert), (node_key_path(node_name), key)):
        row = KeyMaterial.objects.using("cluster").filter(path=path).first() or KeyMaterial(path=path)
        row.content = content.decode()
        rows.append(row)
    return rows, certificates.certificate_fingerprint(cert)


@bootstrap.register
def cluster_identity(node_name: str) -> list[Model]:
    """Create whatever of the cluster's and this node's identity is missing."""
    from authz import keys as key_generators  # cryptography is only needed the first time
    from cluster.keys import certificates

    wanted: list[Model] = []
    now = datetime.now(UTC)
    present = dict(KeyMaterial.objects.using("cluster").values_list("path", "content"))
    if not ClusterSettings.objects.using("cluster").filter(id="datacenter").exists():
        wanted.append(ClusterSettings(id="datacenter", options={"keyboard": "en-us"}))
    if AUTHKEY not in present:
        private = key_generators.generate_rsa_key()
        stamp = int(now.timestamp())
        wanted.append(KeyMaterial(path=AUTHKEY, content=private.decode(), created=stamp))
        wanted.append(
            KeyMaterial(path=AUTHKEY_PUB, content=key_generators.public_key_pem(private).decode(), created=stamp)
        )
    if WWW_KEY not in present:
        wanted.append(KeyMaterial(path=WWW_KEY, content=key_generators.generate_www_key().decode()))
    if CA_CERT not in present:
        ca_cert, ca_key = certificates.generate_ca(node_name, now=now)
        present[CA_CERT], present[CA_KEY] = ca_cert.decode(), ca_key.decode()
        wanted.append(KeyMaterial(path=CA_CERT, content=present[CA_CERT]))
        wanted.append(KeyMaterial(path=CA_KEY, content=present[CA_KEY]))
    address = local_address()
    node = Node.objects.using("cluster").filter(name=node_name).first()
    fingerprint = None
    if node_cert_path(node_name) not in present:
        rows, fingerprint = node_certificate(node_name, address, present, now)
        wanted.extend(rows)
    if node is None:
        nodeid = bootstrap.local_nodeid()
        if nodeid is None:
            nodeid = (Node.objects.using("cluster").aggregate(m=Max("nodeid"))["m"] or 0) + 1
        wanted.append(Node(name=node_name, nodeid=nodeid, address=address, ssl_fingerprint=fingerprint or ""))
    else:
        if fingerprint is not None:
            node.ssl_fingerprint = fingerprint
        if node.joining and bootstrap.local_nodeid() is not None:
            wanted.extend(joined(node, now))
        elif fingerprint is not None:
            wanted.append(node)
    return wanted


def joined(node: Node, now: datetime) -> list[Model]:
    """This node has joined (its replicator is quorate and in sync): its votes count from now on.

    Run by the joiner's replicator, so a join that dies before this point never raised the
    cluster's expected votes. The vote and the config_version bump are one change set with its
    cluster log entry (a concurrent corosync change makes it a conflict, and it is retried).
    """
    from cluster.corosync.conf import CONFIG_ID

    node.joining = False
    rows: list[Model] = [node]
    config = CorosyncConfig.objects.using("cluster").filter(id=CONFIG_ID).first()
    if config is not None and config.cluster_name:
        config.config_version += 1
        rows.append(config)
    message = f"node {node.name} joined the cluster: its {node.votes} vote(s) count from now on"
    rows.append(
        ClusterLogEntry(time=int(now.timestamp()), tag="pvecm", pid=os.getpid(), node=node.name, user="", msg=message)
    )
    return rows
