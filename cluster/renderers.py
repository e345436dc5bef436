"""``datacenter.cfg`` rendered from the replicated cluster settings."""

from __future__ import annotations

from cluster.models import ClusterSettings
from replicator.mirror import Files, MirrorFile, register_tree_renderer


def render_datacenter_cfg() -> Files:
    settings_row = ClusterSettings.objects.using("cluster").filter(id="datacenter").first()
    options = settings_row.options if settings_row is not None else {}
    text = "".join(f"{key}: {options[key]}\n" for key in sorted(options))
    return {"datacenter.cfg": MirrorFile(text)}


register_tree_renderer(["cluster.clustersettings"], render_datacenter_cfg)
