"""The cluster's files of the config tree: SSH trust files, ``datacenter.cfg`` and ``corosync.conf``."""

from __future__ import annotations

import logging

from authz.models import KeyMaterial
from cluster.corosync import conf as corosync_conf
from cluster.exceptions import InvalidOptions
from cluster.keys import ssh_keys
from cluster.models import ClusterSettings, Node
from replicator.mirror import Files, MirrorFile, register_tree_renderer

log = logging.getLogger(__name__)


def render_ssh_files() -> Files:
    """``priv/authorized_keys`` (every member's root key) and ``priv/known_hosts`` (every member's host key).

    A node whose name or address is not valid (written around the services) or a key with a
    control character is left out and logged: no row can add a line of its own to either file.
    """
    nodes = {}
    for node in Node.objects.using("cluster").order_by("name"):
        try:
            corosync_conf.check_node(node)
        except ValueError as exc:
            log.error("node %r left out of known_hosts and authorized_keys: %s", node.name, exc)
            continue
        nodes[node.name] = node
    rows = dict(
        KeyMaterial.objects.using("cluster")
        .filter(path__startswith="nodes/", path__endswith=".pub")
        .values_list("path", "content")
    )
    rows = {path: key for path, key in rows.items() if _one_line(path, key)}
    authorized, known = [], []
    for name, node in nodes.items():
        root = rows.get(ssh_keys.root_key_row(name))
        if root:
            authorized.append(root if len(root.split()) > 2 else f"{root} root@{name}")
        host = rows.get(ssh_keys.host_key_row(name))
        if host:
            names = ",".join(dict.fromkeys(n for n in (name, node.address) if n))
            known.append(f"{names} {host}")
    return {
        ssh_keys.AUTHORIZED_KEYS: MirrorFile("".join(line + "\n" for line in authorized)),
        ssh_keys.KNOWN_HOSTS: MirrorFile("".join(line + "\n" for line in known)),
    }


def _one_line(path: str, key: str) -> bool:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        log.error("public key %s has a control character; left out of the SSH files", path)
        return False
    return True


def render_datacenter_cfg() -> Files:
    """One ``key: value`` line per option; an option that would not be one line is left out and logged."""
    settings_row = ClusterSettings.objects.using("cluster").filter(id="datacenter").first()
    options = settings_row.options if settings_row is not None and isinstance(settings_row.options, dict) else {}
    lines = []
    for key in sorted(options):
        try:
            ClusterSettings.check_option(key, options[key])
        except InvalidOptions as exc:
            log.error("datacenter.cfg: option left out: %s", exc)
            continue
        lines.append(f"{key}: {int(options[key]) if isinstance(options[key], bool) else options[key]}\n")
    return {"datacenter.cfg": MirrorFile("".join(lines))}


_last_corosync: Files = {}


def render_corosync_conf() -> Files:
    """The tree's ``corosync.conf`` (none outside a cluster), then the host copy when its version rose.

    A row that cannot be rendered keeps the last good file rather than failing the other renderers.
    """
    global _last_corosync
    try:
        rendered = corosync_conf.render_current()
    except Exception:
        log.exception("cannot render corosync.conf; keeping the previous one")
        return _last_corosync
    if rendered is None:
        _last_corosync = {}
        return {}
    text, members = rendered
    corosync_conf.sync_host(text, members)
    _last_corosync = {"corosync.conf": MirrorFile(text)}
    return _last_corosync


register_tree_renderer(["authz.keymaterial", "cluster.node"], render_ssh_files)
register_tree_renderer(["cluster.clustersettings"], render_datacenter_cfg)
register_tree_renderer(["cluster.corosyncconfig", "cluster.node"], render_corosync_conf)
