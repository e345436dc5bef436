"""``manage.py pvesm``: Proxmox's storage CLI, run as root@pam: status, list, alloc, free, path, add, set, remove,
and ``import`` (a volume from a ``raw+size`` / ``qcow2+size`` stream on standard input: a migration's copy)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replicator.exceptions import ReplicationError
from vms import services
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.management.commands.qm import _options, _root
from vms.models import Storage
from vms.storage import VolumeError, stream, volume_path, volumes
from vms.storage.volnames import VolumeNameError, parse_size, parse_volname

FLAGS = ("shared", "disable")


def _storage(storeid: str) -> Storage:
    storage = Storage.objects.filter(storeid=storeid).first()
    if storage is None:
        raise CommandError(f"storage '{storeid}' does not exist")
    return storage


def _fields(options: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = dict(options)
    for flag in FLAGS:
        if flag in fields:
            if fields[flag] not in ("0", "1"):
                raise CommandError(f"--{flag} must be 0 or 1")
            fields[flag] = fields[flag] == "1"
    return fields


class Command(BaseCommand):
    help = "Manage storages and their volumes: status, list, alloc, free, path, add, set, remove."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "verb", choices=["status", "list", "alloc", "free", "path", "add", "set", "remove", "import"]
        )
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **opts: Any) -> None:
        rest: list[str] = opts["rest"]
        positional = []
        while rest and not rest[0].startswith("--"):
            positional.append(rest.pop(0))
        try:
            getattr(self, f"_{opts['verb']}")(positional, _options(rest))
        except ConfigError as exc:
            details = "\n".join(f"{key}: {msg}" for key, msg in sorted(exc.errors.items()))
            raise CommandError(f"400 Parameter verification failed.\n{details}") from None
        except (VMError, ReplicationError, VolumeError, ValueError) as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def _need(positional: list[str], names: tuple[str, ...]) -> list[str]:
        if len(positional) != len(names):
            raise CommandError(f"expected arguments: {' '.join(f'<{n}>' for n in names)}")
        return positional

    def _status(self, positional: list[str], options: dict[str, str]) -> None:
        self._need(positional, ())
        rows = Storage.objects.all()
        if "storage" in options:
            rows = rows.filter(storeid=options["storage"])
        self.stdout.write(
            f"{'Name':<16} {'Type':<8} {'Status':<10} {'Total':>14} {'Used':>14} {'Available':>14} {'%':>7}"
        )
        for storage in rows:
            if "content" in options and options["content"] not in storage.content.split(","):
                continue
            if options.get("enabled") == "1" and storage.disable:
                continue
            entry = volumes.storage_status(storage)
            state = "disabled" if storage.disable else ("active" if entry["active"] else "inactive")
            total, used, avail = (entry[k] // 1024 for k in ("total", "used", "avail"))
            percent = f"{100 * used / total:.2f}%" if total else "0.00%"
            self.stdout.write(
                f"{storage.storeid:<16} {storage.type:<8} {state:<10} {total:>14} {used:>14} {avail:>14} {percent:>7}"
            )

    def _list(self, positional: list[str], options: dict[str, str]) -> None:
        (storeid,) = self._need(positional, ("storage",))
        vmid = int(options["vmid"]) if "vmid" in options else None
        listed = volumes.list_volumes(_storage(storeid), content=options.get("content"), vmid=vmid)
        self.stdout.write(f"{'Volid':<48} {'Format':<8} {'Type':<10} {'Size':>14} {'VMID':>6}")
        for entry in listed:
            owner = entry.get("vmid", "")
            self.stdout.write(
                f"{entry['volid']:<48} {entry['format']:<8} {entry['content']:<10} {entry['size']:>14} {owner!s:>6}"
            )

    def _alloc(self, positional: list[str], options: dict[str, str]) -> None:
        storeid, vmid, filename, size = self._need(positional, ("storage", "vmid", "filename", "size"))
        if not vmid.isdigit():
            raise CommandError(f"invalid VMID '{vmid}'")
        storage = _storage(storeid)
        fmt = options.get("format")
        name: str | None = None
        if filename != f"vm-{vmid}-disk-next":  # Proxmox's placeholder for "pick the next free name"
            if not filename.startswith(f"vm-{vmid}-"):
                raise CommandError(f"illegal name '{filename}' - should be 'vm-{vmid}-*'")
            if "." not in filename:
                filename = f"{filename}.{fmt or volumes.storage_formats(storage)[0]}"
            try:
                fmt = fmt or parse_volname(f"{vmid}/{filename}").format
            except VolumeNameError as exc:
                raise CommandError(str(exc)) from None
            name = filename
        volid = volumes.alloc_volume(storage, int(vmid), parse_size(size, default_unit="K"), fmt=fmt, name=name)
        self.stdout.write(f"successfully created '{volid}'")

    def _volid(self, positional: list[str], options: dict[str, str]) -> str:
        (volume,) = self._need(positional, ("volume",))
        return volume if ":" in volume else f"{options.get('storage', '')}:{volume}"

    def _free(self, positional: list[str], options: dict[str, str]) -> None:
        volid = self._volid(positional, options)
        volumes.volume_info(volid)
        volumes.free_volume(volid)
        self.stdout.write(f"Removed volume '{volid}'")

    def _import(self, positional: list[str], options: dict[str, str]) -> None:
        """``pvesm import <volid> <format> - [--allow-rename 1]``: the stream read from standard input."""
        volid, fmt, source = self._need(positional, ("volume", "format", "filename"))
        if source != "-":
            raise CommandError("only '-' (standard input) is supported as the import source")
        allow_rename = options.pop("allow-rename", "0") == "1"
        if options:
            raise CommandError(f"unknown options: {', '.join(sorted(options))}")
        new = stream.import_volume(volid, fmt, sys.stdin.buffer, allow_rename=allow_rename)
        self.stdout.write(f"successfully imported '{new}'")

    def _path(self, positional: list[str], options: dict[str, str]) -> None:
        self.stdout.write(volume_path(self._volid(positional, options)))

    def _add(self, positional: list[str], options: dict[str, str]) -> None:
        kind, storeid = self._need(positional, ("type", "storage"))
        services.create_storage(storeid, {"type": kind, **_fields(options)}, actor=_root())

    def _set(self, positional: list[str], options: dict[str, str]) -> None:
        (storeid,) = self._need(positional, ("storage",))
        fields = _fields({k: v for k, v in options.items() if k != "delete"})
        for key in filter(None, options.get("delete", "").split(",")):
            fields[key] = False if key in FLAGS else ""
        services.update_storage(_storage(storeid), fields, actor=_root())

    def _remove(self, positional: list[str], options: dict[str, str]) -> None:
        (storeid,) = self._need(positional, ("storage",))
        services.delete_storage(_storage(storeid), actor=_root())
