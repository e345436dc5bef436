"""A history that lost a sync round: kept as a dated file, reported, its append-only rows merged back.

A member takes the winner's snapshot instead of a delta either because it is merely far behind
(its history proven a prefix of the winner's: nothing is lost) or because its history is not
proven to be one: it forked (a forced quorum), or its version is older than the winner's
retained change log, so the hash chain cannot tell. Those two are treated alike: the state
about to be replaced is kept, the cluster log and ``pvecm status`` name the file, and rows of
append-only models (the cluster log) that the winner lacks are written again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from replicator import snapshot
from replicator.models import REPLICATED_MODELS, ReplicatedModel
from replicator.sync_plan import FORKED, UNPROVEN

log = logging.getLogger(__name__)

WHY = {
    FORKED: "diverged from {winner}'s (forced quorum?)",
    UNPROVEN: (
        "cannot be proven a prefix of {winner}'s (version {version} is older than {winner}'s retained "
        "change log, PVE_CHANGELOG_RETAIN) and is treated as diverged"
    ),
}


def keep_state(data_dir: Path, version: int, head: str, winner: str, why: str) -> dict[str, Any]:
    """Save the state about to be replaced as a dated file; returns the report (``status``, ``pvecm status``)."""
    text = "history " + WHY[why].format(winner=winner, version=version)
    path = snapshot.save_diverged(data_dir / "diverged", version, head, text)
    log.error("%s: local state kept in %s", text, path)
    return {
        "time": int(time.time()),
        "file": str(path),
        "lost_version": version,
        "lost_hash": head,
        "winner": winner,
        "reason": why,
        "message": text,
    }


def cluster_log_message(node: str, report: dict[str, Any]) -> str:
    text = str(report["message"]).removeprefix("history ")
    return f"history of node {node} {text}; local state at version {report['lost_version']} kept in {report['file']}"


def mergeable_rows() -> list[snapshot.Row]:
    """This node's rows of the models merged after a divergence (read before the snapshot replaces them)."""
    labels = {label for label, model in REPLICATED_MODELS.items() if model.merge_after_divergence}
    return list(snapshot.rows(labels))


def lost_rows(kept: list[snapshot.Row], installed: list[snapshot.Row]) -> list[snapshot.Row]:
    """Kept rows the installed state lacks; a ring's rows older than the winner's full ring aged out, not lost."""
    labels = {row[0] for row in kept}
    present = {(row[0], json.dumps(row[1])) for row in installed if row[0] in labels}
    floors: dict[str, tuple[Any, ...]] = {}
    for label in labels:
        model = REPLICATED_MODELS[label]
        if model.ring_size_setting is None:
            continue
        ring = [_ring_key(model, row) for row in installed if row[0] == label]
        if ring and len(ring) >= int(getattr(settings, model.ring_size_setting)):
            floors[label] = min(ring)
    return [
        row
        for row in kept
        if (row[0], json.dumps(row[1])) not in present
        and not (row[0] in floors and _ring_key(REPLICATED_MODELS[row[0]], row) < floors[row[0]])
    ]


def _ring_key(model: type[ReplicatedModel], row: snapshot.Row) -> tuple[Any, ...]:
    """A row's position in its ring (``ring_order``), from its snapshot encoding."""
    key = []
    for name in model.ring_order:
        field = model._meta.get_field(name)
        key.append(row[1] if field.primary_key else row[3][field.attname])  # type: ignore[union-attr]  # ring_order names concrete fields
    return tuple(key)
