"""``manage.py qm``: Proxmox's VM CLI, run as root@pam: config verbs through ``vms.services``, power verbs
as tasks (a UPID and its log, shown as it is written) through ``vms.qemu.lifecycle``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz.models import SUPERUSER, User
from portal.tasks.index import own_process_task
from replicator.exceptions import ReplicationError
from vms import lookups, services
from vms.config import ConfigError
from vms.exceptions import VMError
from vms.management.commands import _qm_disks as qm_disks
from vms.management.commands import _qm_snapshots as qm_snapshots
from vms.models import VM
from vms.qemu import cli as power
from vms.qemu import mtunnel
from vms.qemu.agent import SIMPLE_COMMANDS, AgentError, simple_command
from vms.qemu.cli import POWER_VERBS
from vms.runtime_paths import vm_pid
from vms.services import clone, migration

MIGRATION_OPTIONS = ("migration_type", "migration_network")
CLONE_STRINGS = ("name", "description", "storage", "format", "target", "pool", "snapname")


def _root() -> User:
    """The CLI acts as root@pam (as Proxmox's qm, which runs as root on the node)."""
    user = User.objects.filter(userid=SUPERUSER).first()
    if user is None:
        raise CommandError(f"{SUPERUSER} does not exist (node not bootstrapped?)")
    return user


def _options(extra: list[str]) -> dict[str, str]:
    """``--key value`` pairs after the verb's own arguments (config keys are open-ended); ``--flag`` alone is 1."""
    options: dict[str, str] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise CommandError(f"unexpected argument {arg!r} (expected --<option> <value>)")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                value = "1"  # a bare flag (``--purge``) is a boolean set, as Proxmox's CLI reads it
            else:
                value = extra[i + 1]
                i += 1
        if key in options:
            raise CommandError(f"option --{key} given twice")
        options[key] = value
        i += 1
    return options


class Command(BaseCommand):
    help = "Manage QEMU VMs: create, set, config, list, destroy, unlock, agent, and the power and runtime verbs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "verb",
            choices=[
                "create",
                "set",
                "config",
                "pending",
                "list",
                "destroy",
                "unlock",
                "agent",
                "clone",
                "template",
                "migrate",
                "mtunnel",
                *POWER_VERBS,
                *qm_disks.VERBS,
                *qm_snapshots.VERBS,
            ],
        )
        parser.add_argument("vmid", nargs="?")
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **opts: Any) -> None:
        verb, vmid, rest = opts["verb"], opts["vmid"], opts["rest"]
        try:
            if verb == "list":
                self._list()
                return
            if verb == "mtunnel":  # the target's command channel of a live migration (root over node SSH)
                mtunnel.serve(sys.stdin, self._answer)
                return
            if vmid is None:
                raise CommandError(f"qm {verb} needs a VMID")
            if verb == "agent":
                self._agent(vmid, rest)
            elif verb == "clone":
                self._clone(vmid, rest)
            elif verb == "migrate":
                self._migrate(vmid, rest)
            elif verb in qm_disks.VERBS:
                qm_disks.run(self, verb, vmid, rest, root=_root(), parse=_options)
            elif verb in qm_snapshots.VERBS:
                qm_snapshots.run(self, verb, vmid, rest, parse=_options)
            elif verb in POWER_VERBS:
                power.run_verb(self, verb, self._vm(vmid), _options(rest))
            else:
                getattr(self, f"_{verb}")(vmid, _options(rest))
        except ConfigError as exc:
            details = "\n".join(f"{key}: {msg}" for key, msg in sorted(exc.errors.items()))
            raise CommandError(f"400 Parameter verification failed.\n{details}") from None
        except (VMError, ReplicationError, AgentError, power.CLIError) as exc:
            raise CommandError(str(exc)) from None

    def _answer(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def _vm(self, vmid: str) -> VM:
        from vms.config import validate_vmid

        return lookups.get_vm(validate_vmid(vmid))

    def _create(self, vmid: str, options: dict[str, str]) -> None:
        vm = services.create_vm(vmid, options, node=settings.PVE_NODE_NAME, actor=_root())
        self.stdout.write(f"VM {vm.vmid} created on node '{vm.node_id}'")

    def _set(self, vmid: str, options: dict[str, str]) -> None:
        delete = options.pop("delete", None)
        digest = options.pop("digest", None)
        skiplock = options.pop("skiplock", "0") == "1"
        services.update_vm_config(
            self._vm(vmid), set_=options, delete=delete, digest=digest, skiplock=skiplock, actor=_root()
        )

    def _config(self, vmid: str, options: dict[str, str]) -> None:
        if options:
            raise CommandError(f"qm config takes no options but {', '.join(sorted(options))}")
        self.stdout.write(self._vm(vmid).config_text(), ending="")

    def _pending(self, vmid: str, options: dict[str, str]) -> None:
        """Proxmox's ``qm pending``: ``cur key: value`` per key (no change waits to be applied here)."""
        if options:
            raise CommandError(f"qm pending takes no options but {', '.join(sorted(options))}")
        for key, value in sorted(self._vm(vmid).full_config().items()):
            self.stdout.write(f"cur {key}: {value}")

    def _destroy(self, vmid: str, options: dict[str, str]) -> None:
        skiplock = options.pop("skiplock", "0") == "1"
        purge = options.pop("purge", "0") == "1"
        unreferenced = options.pop("destroy-unreferenced-disks", "0") == "1"
        if options:
            raise CommandError(f"unknown options: {', '.join(sorted(options))}")
        vm = self._vm(vmid)
        services.destroy_vm(
            vm,
            actor=_root(),
            skiplock=skiplock,
            purge=purge,
            destroy_unreferenced=unreferenced,
            progress=self.stdout.write,
        )
        self.stdout.write(f"VM {vm.vmid} destroyed")

    def _unlock(self, vmid: str, options: dict[str, str]) -> None:
        """Proxmox's ``qm unlock``: remove a lock by hand (a leftover of a crash, or set by hand)."""
        if options:
            raise CommandError(f"qm unlock takes no options but {', '.join(sorted(options))}")
        vm = self._vm(vmid)
        was, owner = services.unlock_vm(vm, actor=_root())
        if not was:
            self.stdout.write(f"VM {vm.vmid} is not locked")
            return
        self.stdout.write(f"VM {vm.vmid} unlocked (was '{was}'{f', held by {owner}' if owner else ''})")

    def _as_task(self, type_: str, vm: VM, work: Callable[[Callable[[str], None], str], object]) -> None:
        """Run ``work(log, upid)`` as a task of this process, its log lines shown as they are written."""
        with own_process_task(type_, str(vm.vmid), SUPERUSER) as task:

            def log(line: str) -> None:
                task.log(line)
                self.stdout.write(line)
                self.stdout.flush()

            work(log, task.upid)

    def _template(self, vmid: str, options: dict[str, str]) -> None:
        """``qm template <vmid> [--disk <drive>]``: the VM's disks made read-only base volumes."""
        disk = options.pop("disk", None)
        if options:
            raise CommandError(f"unknown options: {', '.join(sorted(options))}")
        vm = self._vm(vmid)
        self._as_task(
            "qmtemplate", vm, lambda log, _upid: clone.template_vm(vm, actor=_root(), disk=disk, progress=log)
        )

    def _migrate(self, vmid: str, rest: list[str]) -> None:
        """``qm migrate <vmid> <target> [--online --force --targetstorage --with-local-disks --bwlimit]``."""
        if not rest or rest[0].startswith("--"):
            raise CommandError("qm migrate <vmid> <target> [OPTIONS]")
        target, options = rest[0], _options(rest[1:])
        unknown = set(options) - {"online", "force", "targetstorage", "with-local-disks", "bwlimit", *MIGRATION_OPTIONS}
        if unknown:
            raise CommandError(f"unknown options: {', '.join(sorted(unknown))}")
        bwlimit = options.get("bwlimit", "0")
        if not bwlimit.isdigit():
            raise CommandError(f"--bwlimit: expected KiB/s (an integer >= 0), got {bwlimit!r}")
        if options.get("migration_type", "secure") not in ("secure", "insecure"):
            raise CommandError("--migration_type: secure or insecure")
        vm = lookups.get_vm(self._vm(vmid).vmid, settings.PVE_NODE_NAME)  # only the VM's own node migrates it
        plan = migration.check_migrate(
            vm,
            target,
            actor=_root(),
            online=options.get("online") == "1",
            force=options.get("force") == "1",
            targetstorage=options.get("targetstorage"),
            log=self.stdout.write,
        )
        self._as_task(
            "qmigrate",
            vm,
            lambda log, upid: migration.migrate_vm(
                plan,
                owner=upid,
                user=SUPERUSER,
                log=log,
                bwlimit=int(bwlimit) or None,
                migration_type=options.get("migration_type"),
                migration_network=options.get("migration_network"),
            ),
        )

    def _clone(self, vmid: str, rest: list[str]) -> None:
        """``qm clone <vmid> <newid> [--name --description --full --storage --format --target --pool --snapname]``."""
        if not rest or rest[0].startswith("--"):
            raise CommandError("qm clone <vmid> <newid> [OPTIONS]")
        newid, options = rest[0], _options(rest[1:])
        unknown = set(options) - {*CLONE_STRINGS, "full", "bwlimit"}
        if unknown:
            raise CommandError(f"unknown options: {', '.join(sorted(unknown))}")
        if options.get("full", "1") not in ("0", "1") or not options.get("bwlimit", "0").isdigit():
            raise CommandError("--full takes 0 or 1, --bwlimit KiB/s")
        kwargs: dict[str, Any] = {key: options[key] for key in CLONE_STRINGS if key in options}
        kwargs["full"] = options["full"] == "1" if "full" in options else None
        bwlimit = int(options["bwlimit"]) if "bwlimit" in options else None
        vm = self._vm(vmid)
        root = _root()
        clone.check_clone(vm, newid, actor=root, **kwargs)
        self._as_task(
            "qmclone",
            vm,
            lambda log, upid: clone.clone_vm(
                vm, newid, actor=root, owner=upid, progress=log, bwlimit=bwlimit, **kwargs
            ),
        )

    def _agent(self, vmid: str, rest: list[str]) -> None:
        """``qm agent <vmid> <command>`` (Proxmox's ``qm guest cmd``): the result as JSON, a scalar as is."""
        if len(rest) != 1 or rest[0] not in SIMPLE_COMMANDS:
            raise CommandError(f"qm agent <vmid> <command>; command is one of: {', '.join(sorted(SIMPLE_COMMANDS))}")
        vm = self._vm(vmid)
        result = simple_command(vm.vmid, vm.config, rest[0])
        if isinstance(result, dict | list):
            if result:
                self.stdout.write(json.dumps(result, indent=4, sort_keys=True))
        elif result is not None and str(result).strip():
            self.stdout.write(str(result))

    def _list(self) -> None:
        self.stdout.write(f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':>10} {'BOOTDISK(GB)':>12} {'PID':>10}")
        for vm in VM.objects.filter(node_id=settings.PVE_NODE_NAME):
            name = str(vm.config.get("name", f"VM {vm.vmid}"))
            memory = str(vm.config.get("memory", "512")).removeprefix("current=")
            pid = vm_pid(vm.vmid)
            state = "running" if pid else "stopped"
            self.stdout.write(f"{vm.vmid:>10} {name:<20} {state:<10} {memory:>10} {0:>12.2f} {pid or 0:>10}")
