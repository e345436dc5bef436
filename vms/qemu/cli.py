"""``qm`` power and runtime verbs: start, stop, shutdown, reboot, reset, suspend, resume, status, showcmd, monitor.

As Proxmox's ``qm`` (root@pam on the VM's node): the power verbs run as a task of this process
with a UPID, their log lines shown while the task log gets them; ``monitor`` sends human monitor
commands through QMP ``human-monitor-command``.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import Any, TextIO

from portal.tasks.index import TaskHandle, own_process_task
from vms.models import VM
from vms.qemu import hibernate, incoming, lifecycle, process, qmp

POWER_VERBS = ("start", "stop", "shutdown", "reboot", "reset", "suspend", "resume", "status", "showcmd", "monitor")
TASK_TYPES = {
    "start": "qmstart", "stop": "qmstop", "shutdown": "qmshutdown", "reboot": "qmreboot",
    "reset": "qmreset", "suspend": "qmpause", "resume": "qmresume",
}  # fmt: skip
OPTIONS = {
    "start": {
        "skiplock",
        "timeout",
        "migratedfrom",
        "stateuri",
        "machine",
        "migration_network",
        "migration_type",
        "nbd-disks",
    },
    "stop": {"skiplock", "timeout", "keepActive", "overrule-shutdown", "migratedfrom"},
    "shutdown": {"skiplock", "timeout", "forceStop", "keepActive"},
    "reboot": {"timeout"},
    "reset": {"skiplock"},
    "suspend": {"skiplock", "todisk", "statestorage"},
    "resume": {"skiplock", "nocheck"},
    "status": {"verbose"},
    "showcmd": {"pretty"},
    "monitor": set(),
}


class CLIError(Exception):
    """A wrong invocation (unknown option, bad value)."""


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.get(name, "0")
    if value not in ("0", "1"):
        raise CLIError(f"--{name}: expected 0 or 1, got {value!r}")
    return value == "1"


def _timeout(options: dict[str, str]) -> float | None:
    value = options.get("timeout")
    if value is None:
        return None
    if not value.isdigit():
        raise CLIError(f"--timeout: expected seconds (an integer >= 0), got {value!r}")
    return float(value)


def _power(verb: str, vmid: int, options: dict[str, str], task: TaskHandle, log: Callable[[str], None]) -> None:
    skiplock = _flag(options, "skiplock")
    if "nbd-disks" in options and "migratedfrom" not in options:
        raise CLIError("--nbd-disks: only with --migratedfrom")
    if "migratedfrom" in options:
        _migration_target(verb, vmid, options, log)
    elif verb == "resume" and _flag(options, "nocheck"):
        incoming.resume_incoming(vmid, log=log)
    elif verb == "start":
        lifecycle.start_vm(vmid, log=log, skiplock=skiplock, timeout=_timeout(options))
    elif verb == "stop":
        if _flag(options, "overrule-shutdown"):
            from vms.qemu.operations import abort_shutdowns

            abort_shutdowns(vmid, task)
        lifecycle.stop_vm(vmid, log=log, skiplock=skiplock, timeout=_timeout(options))
    elif verb == "shutdown":
        lifecycle.shutdown_vm(
            vmid,
            log=log,
            warn=task.warn,
            skiplock=skiplock,
            timeout=_timeout(options),
            force_stop=_flag(options, "forceStop"),
        )
    elif verb == "reboot":
        lifecycle.reboot_vm(vmid, log=log, timeout=_timeout(options))
    elif verb == "reset":
        lifecycle.reset_vm(vmid, log=log, skiplock=skiplock)
    elif verb == "suspend":
        if "statestorage" in options and not _flag(options, "todisk"):
            raise CLIError("--statestorage: only with --todisk 1")
        if _flag(options, "todisk"):
            hibernate.suspend_to_disk(
                vmid,
                owner=task.upid,
                log=log,
                warn=task.warn,
                statestorage=options.get("statestorage"),
                skiplock=skiplock,
            )
        else:
            lifecycle.suspend_vm(vmid, log=log, skiplock=skiplock)
    else:
        lifecycle.resume_vm(vmid, log=log, skiplock=skiplock)


def _migration_target(verb: str, vmid: int, options: dict[str, str], log: Callable[[str], None]) -> None:
    """The target's side of a live migration, run by the source over node SSH (root only, as this CLI)."""
    source = options["migratedfrom"]
    if verb == "stop":
        incoming.stop_incoming(vmid, migratedfrom=source, log=log)
        return
    incoming.start_incoming(
        vmid,
        migratedfrom=source,
        stateuri=options.get("stateuri", "unix"),
        machine=options.get("machine", ""),
        network=options.get("migration_network"),
        log=log,
        disks=incoming.parse_nbd_disks(options.get("nbd-disks", "")),
    )


def run_task(verb: str, vm: VM, options: dict[str, str], out: TextIO) -> str:
    """Run a power verb as a task of this process, echoing its log; its UPID (an error raises)."""
    type_ = "qmsuspend" if verb == "suspend" and options.get("todisk") == "1" else TASK_TYPES[verb]
    with own_process_task(type_, str(vm.vmid), "root@pam") as task:

        def log(line: str) -> None:
            task.log(line)
            out.write(line + "\n")

        _power(verb, vm.vmid, options, task, log)
    return task.upid


def showcmd(vm: VM, *, pretty: bool) -> str:
    argv = process.command_for(vm.vmid, vm.full_config())
    if not pretty:
        return shlex.join(argv)
    lines = [shlex.quote(argv[0])]
    for arg in argv[1:]:
        if arg.startswith("-"):
            lines.append(shlex.quote(arg))
        else:
            lines[-1] += " " + shlex.quote(arg)
    return " \\\n  ".join(lines)


def monitor(vmid: int, source: TextIO, out: TextIO) -> None:
    """Proxmox's ``qm monitor``: a ``qm>`` prompt; each line goes to the human monitor, ``quit`` ends."""
    if not process.is_running(vmid):
        raise lifecycle.NotRunning(vmid)
    out.write(f"Entering QEMU Monitor for VM {vmid} - type 'help' for help\n")
    while True:
        out.write("qm> ")
        out.flush()
        line = source.readline()
        if not line or line.strip() in ("quit", "q"):
            break
        if not line.strip():
            continue
        try:
            out.write(qmp.human_monitor(vmid, line.strip()))
        except qmp.QMPCommandError as exc:
            out.write(f"ERROR: {exc}\n")
    out.write("\n")


def run_verb(command: Any, verb: str, vm: VM, options: dict[str, str]) -> None:
    """Dispatch one verb of ``qm`` (``command`` is the management command, for its output streams)."""
    unknown = set(options) - OPTIONS[verb]
    if unknown:
        raise CLIError(f"qm {verb}: unknown option --{sorted(unknown)[0]}")
    if verb == "status":
        state = "running" if process.is_running(vm.vmid) else "stopped"
        command.stdout.write(f"status: {state}")
        if _flag(options, "verbose") and state == "running":
            command.stdout.write(f"qmpstatus: {qmp.status(vm.vmid)}")
            command.stdout.write(f"pid: {process.vm_pid(vm.vmid)}")
    elif verb == "showcmd":
        command.stdout.write(showcmd(vm, pretty=_flag(options, "pretty")))
    elif verb == "monitor":
        monitor(vm.vmid, sys.stdin, sys.stdout)
    else:
        run_task(verb, vm, options, command.stdout)
