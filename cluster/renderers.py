"""``datacenter.cfg`` and ``corosync.conf`` rendered from the replicated cluster settings and nodes."""

from __future__ import annotations

import logging

from cluster.corosync import conf as corosync_conf
from cluster.models import ClusterSettings
from cluster.services import InvalidOptions, check_datacenter_option
from replicator.mirror import Files, MirrorFile, register_tree_renderer

log = logging.getLogger(__name__)


def render_datacenter_cfg() -> Files:
    """One ``key: value`` line per option; an option that would not be one line is left out and logged."""
    settings_row = ClusterSettings.objects.using("cluster").filter(id="datacenter").first()
    options = settings_row.options if settings_row is not None and isinstance(settings_row.options, dict) else {}
    lines = []
    for key in sorted(options):
        try:
            check_datacenter_option(key, options[key])
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


register_tree_renderer(["cluster.clustersettings"], render_datacenter_cfg)
register_tree_renderer(["cluster.corosyncconfig", "cluster.node"], render_corosync_conf)
