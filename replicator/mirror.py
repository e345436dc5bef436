"""The config tree mirror: cluster state rendered into Proxmox's file formats under PVE_ETC_DIR.

Apps register renderers in ``AppConfig.ready()``; the replicator calls them after applies.
Files are replaced atomically and durably (``replicator.files``: write, fsync, rename, fsync the
directory, as DESIGN.md asks) and only when their content changed.
Paths under ``priv/`` or ``nodes/<node>/priv/`` are private: files 0600, directories 0700.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.apps import apps
from django.db import models

from replicator.files import atomic_symlink, atomic_write

log = logging.getLogger(__name__)

Files = dict[str, "MirrorFile"]


@dataclass(frozen=True)
class MirrorFile:
    """One rendered file; ``content`` as text (UTF-8) or bytes."""

    content: str | bytes

    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content


@dataclass
class ObjectRenderer:
    """Renders the files of one object (a VM's config); re-run only for changed objects."""

    model: str
    render: Callable[[Any], Files]
    cleanup_globs: tuple[str, ...]


@dataclass
class TreeRenderer:
    """Renders files that depend on whole tables (user.cfg); re-run when any of them changes."""

    depends_on: frozenset[str]
    render: Callable[[], Files]
    owned: set[str] = field(default_factory=set)


_object_renderers: list[ObjectRenderer] = []
_tree_renderers: list[TreeRenderer] = []


def register_object_renderer(model: str, render: Callable[[Any], Files], cleanup_globs: Iterable[str] = ()) -> None:
    """``render(instance)`` returns the files of that object; globs name what stale files look like."""
    _object_renderers.append(ObjectRenderer(model.lower(), render, tuple(cleanup_globs)))


def register_tree_renderer(depends_on: Iterable[str], render: Callable[[], Files]) -> None:
    """``render()`` returns whole-tree files; re-run when a model in ``depends_on`` changes."""
    _tree_renderers.append(TreeRenderer(frozenset(m.lower() for m in depends_on), render))


def is_private(relpath: str) -> bool:
    """pmxcfs's rule: ``priv/...`` and ``nodes/<node>/priv/...`` are private."""
    parts = relpath.split("/")
    return parts[0] == "priv" or (len(parts) >= 3 and parts[0] == "nodes" and parts[2] == "priv")


def _safe_relpath(relpath: str) -> str:
    parts = relpath.split("/")
    if relpath.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in relpath:
        raise ValueError(f"refusing to render outside the tree: {relpath!r}")
    return relpath


class Mirror:
    """Writes the tree; not thread-safe, driven by one mirror thread."""

    def __init__(self, root: Path, node_name: str) -> None:
        self.root = root
        self.node_name = node_name
        self.index: dict[tuple[str, Any], set[str]] = {}

    def _mkdirs(self, relpath: str) -> Path:
        target = self.root
        parts = relpath.split("/")[:-1]
        for i, part in enumerate(parts):
            target = target / part
            mode = 0o700 if is_private("/".join(parts[: i + 1]) + "/x") else 0o755
            if not target.is_dir():
                target.mkdir(mode=mode)
                os.chmod(target, mode)  # mkdir's mode is reduced by the umask
        return target

    def write(self, relpath: str, file: MirrorFile) -> bool:
        """Atomically replace one file if its content differs; returns whether it changed."""
        relpath = _safe_relpath(relpath)
        self._mkdirs(relpath)
        path = self.root / relpath
        data = file.data()
        mode = 0o600 if is_private(relpath) else 0o640
        try:
            if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
                return False
        except FileNotFoundError:
            pass
        atomic_write(path, data, mode=mode)
        return True

    def remove(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / _safe_relpath(relpath)).unlink()

    def links(self) -> None:
        """``local`` and ``qemu-server`` point at this node's directory, as pmxcfs's link plugin does."""
        self._mkdirs(f"nodes/{self.node_name}/qemu-server/x")
        for name, target in (
            ("local", f"nodes/{self.node_name}"),
            ("qemu-server", f"nodes/{self.node_name}/qemu-server"),
        ):
            link = self.root / name
            if link.is_symlink() and os.readlink(link) == target:
                continue
            atomic_symlink(link, target)

    def render_all(self) -> None:
        """Render everything and remove stale files that renderers own (start-up)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for leftover in self.root.rglob(".*.tmp"):  # a write cut short when the last run was killed
            leftover.unlink(missing_ok=True)
        self.links()
        for renderer in _object_renderers:
            model = apps.get_model(renderer.model)
            wanted: set[str] = set()
            for instance in model._base_manager.using("cluster").all():
                try:
                    files = renderer.render(instance)
                except Exception:  # one unrenderable object must not keep the node from starting
                    log.exception("cannot render %s %s", renderer.model, instance.pk)
                    continue
                self.index[(renderer.model, instance.pk)] = set(files)
                wanted.update(files)
                for relpath, file in files.items():
                    self.write(relpath, file)
            for glob in renderer.cleanup_globs:
                for path in self.root.glob(glob):
                    relpath = path.relative_to(self.root).as_posix()
                    if relpath not in wanted:
                        path.unlink()
        for tree in _tree_renderers:
            self._render_tree(tree)

    def _render_tree(self, tree: TreeRenderer) -> None:
        files = tree.render()
        for relpath, file in files.items():
            self.write(relpath, file)
        for stale in tree.owned - set(files):
            self.remove(stale)
        tree.owned = set(files)

    def _render_object(self, renderer: ObjectRenderer, pk: Any, instance: Any) -> None:
        try:
            files = renderer.render(instance) if instance is not None else {}
        except Exception:  # keep the old files; the others still render
            log.exception("cannot render %s %s", renderer.model, pk)
            return
        key = (renderer.model, pk)
        for relpath, file in files.items():
            self.write(relpath, file)
        for stale in self.index.get(key, set()) - set(files):
            self.remove(stale)
        if files:
            self.index[key] = set(files)
        else:
            self.index.pop(key, None)

    def render_changes(self, changed: Iterable[tuple[str, Any]]) -> None:
        """Re-render what the changed rows affect."""
        changed = set(changed)
        labels = {label for label, _ in changed}
        for renderer in _object_renderers:
            model: type[models.Model] = apps.get_model(renderer.model)
            pks = [pk for label, pk in changed if label == renderer.model]
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                found = {obj.pk: obj for obj in model._base_manager.using("cluster").filter(pk__in=chunk).order_by()}
                for pk in chunk:
                    self._render_object(renderer, pk, found.get(pk))
        for tree in _tree_renderers:
            if tree.depends_on & labels:
                self._render_tree(tree)
