#!/usr/bin/env python3
"""Live migration of a running 1 GiB guest that dirties its RAM: ``qm migrate --online`` against raw QMP ``migrate``.

Usage: flock /tmp/pve-lab.lock .venv/bin/python bench/migrate_online.py [--runs 3] [--transport both] [--via both] [--no-append]

A 2-node lab of whole nodes (namespaces; each node its own sshd, web server and worker) and the test guest (``tests/guest``: kernel and
busybox initramfs with qemu-ga) as VM 9870 (memory 1024, no disk, TCG: on these nested-KVM
machines the guest kernel hangs under KVM, see tests/guest/qemu.py). In
each run the guest first fills a 256 MiB tmpfs file with copies of 4 MiB of random bytes, then rewrites 4 MiB of it
every 50 ms (about 70 MiB/s of dirtied pages), started through qemu-ga; the migration starts 3 s
later. Per run and transport, alternating:
  1. ours, "api": ``POST /nodes/<owner>/qemu/<vmid>/migrate`` (``online 1``; ``migration_type insecure``
     over the lab network for "insecure") as root@pam from inside the owner's namespace, timed from
     the request to the task's ``stopped`` status (polled every 50 ms); "cli": ``qm migrate <vmid>
     <other> --online 1`` on the owning node, timed from the command's start to its exit;
  2. raw (under the VM's ``migrate`` lock, which keeps the nodes' migration reconcilers away from
     a migration none of their tasks runs): the argv ``qm showcmd`` prints, started by hand on the owner, the same argv (the node
     directory swapped) with ``-S -incoming`` on the other node, ``ssh -N -L`` unix-socket forward
     with the node's key ("secure") or plain TCP ("insecure"), the same capabilities and parameters
     (auto-converge, downtime-limit 100 ms, max-bandwidth 16 GiB/s), ``migrate``, ``query-migrate``
     every 0.25 s as ours, then ``cont`` on the target and ``quit`` on the source.
Both clocks start before the target QEMU is launched and stop once it runs. Targets: ours under
1.3x raw (medians), downtime under 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import command_line, heading, publish  # noqa: E402
from cluster.lab.cluster import LabCluster, LabNode  # noqa: E402
from tests.cluster.lifecycle import PATH, manage, web_answers  # noqa: E402
from tests.guest.image import build_guest_image  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402
from tests.vms.test_migrate_lab import whole_nodes  # noqa: E402

VMID = 9870
POLL = 0.25  # seconds between query-migrate calls, as vms/qemu/migration.py
SETTLE = 3.0  # seconds the dirtying runs before the migration starts
PARAMS = {"downtime-limit": 100, "max-bandwidth": 16 * 1024**3}  # what vms/qemu/migration.parameters() sets
RAW_PORT = 60400
FILL = (
    "mkdir -p /mnt/dirty && mount -t tmpfs -o size=300m tmpfs /mnt/dirty && "
    "dd if=/dev/urandom of=/mnt/dirty/src bs=1M count=4 2>/dev/null && "
    "i=0; while [ $i -lt 64 ]; do dd if=/mnt/dirty/src of=/mnt/dirty/ws bs=1M count=4 seek=$((i * 4)) "
    "conv=notrunc 2>/dev/null; i=$((i+1)); done"
)
# The raw migration runs under the VM's ``migrate`` lock: the nodes' migration reconcilers would
# otherwise cancel a migration no task of theirs runs (as they must) and stop its target QEMU.
LOCK_MIGRATE = f"""
from django.db import transaction
from vms.models import VM
with transaction.atomic(using="cluster"):
    vm = VM.objects.get(vmid={VMID})
    vm.lock = "migrate"
    vm.save(update_fields=["lock"])
"""
API_MIGRATE = r"""
import http.client, json, ssl, sys, time, urllib.parse
host, ca, password, path, values = sys.argv[1:6]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
form = {"Content-Type": "application/x-www-form-urlencoded"}
def call(method, url, body=None, headers=None):
    connection = http.client.HTTPSConnection(host, 8006, context=context, timeout=600)
    connection.request(method, "/api2/json" + url, body=body, headers=headers or {})
    answer = connection.getresponse()
    data = json.loads(answer.read() or b"{}")
    connection.close()
    if answer.status != 200:
        raise SystemExit(f"{method} {url}: {answer.status} {data}")
    return data["data"]
login = call("POST", "/access/ticket", urllib.parse.urlencode({"username": "root@pam", "password": password}), form)
auth = {"Cookie": "PVEAuthCookie=" + urllib.parse.quote(login["ticket"], safe=""),
        "CSRFPreventionToken": login["CSRFPreventionToken"]}
begin = time.perf_counter()
upid = call("POST", path, urllib.parse.urlencode(json.loads(values)), {**auth, **form})
task = f"/nodes/{path.split('/')[2]}/tasks/{urllib.parse.quote(upid, safe='')}"
while (status := call("GET", task + "/status", headers=auth))["status"] != "stopped":
    time.sleep(0.05)
seconds = time.perf_counter() - begin
log = [entry["t"] for entry in call("GET", task + "/log?start=0&limit=0", headers=auth)]
print(json.dumps({"seconds": seconds, "exitstatus": status.get("exitstatus"), "log": log}))
"""
DIRTY = (
    "i=0; while true; do dd if=/mnt/dirty/src of=/mnt/dirty/ws bs=1M count=4 seek=$((i % 64 * 4)) "
    "conv=notrunc 2>/dev/null; i=$((i+1)); usleep 50000; done"
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


class Monitor:
    """A QMP client on a unix socket (one JSON line per message)."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()  # greeting
        self.call("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError("monitor closed")
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if "event" not in message:
                    return dict(message)

    def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{command}: {answer['error']}")
        return answer.get("return")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def qmp(path: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
    monitor = Monitor(path)
    try:
        return monitor.call(command, arguments)
    finally:
        monitor.close()


def qmp_socket(argv: list[str]) -> str:
    """The QMP socket of a QEMU argv (``-qmp unix:<path>,server=on,...``)."""
    return argv[argv.index("-qmp") + 1].removeprefix("unix:").split(",")[0]


GUEST_EXEC = (
    "import json,sys,time; from vms.qemu import agent; v, script, wait = int(sys.argv[1]), sys.argv[2], sys.argv[3] == '1'\n"
    "pid = agent.execute(v, ['/bin/sh', '-c', script])['pid']\n"
    "while wait:\n"
    "    s = agent.exec_status(v, pid)\n"
    "    if s['exited']: print(json.dumps(s)); break\n"
    "    time.sleep(0.2)\n"
)


class Bench:
    """The lab, the VM and the two ways of migrating it; ``owner`` is the node the VM belongs to."""

    def __init__(self, lab: LabCluster) -> None:
        self.lab = lab
        self.owner = 0

    def qm(self, index: int, *args: str, check: bool = True, sub: bool = True) -> str:
        done = manage(self.lab, self.lab.nodes[index], *(("qm",) if sub else ()), *args, timeout=600)
        if check and done.returncode != 0:
            raise RuntimeError(f"qm {' '.join(args)}: {done.stdout}{done.stderr}")
        return str(done.stdout)

    def guest(self, script: str, *, wait: bool) -> None:
        """``/bin/sh -c script`` in the guest through its agent (our client, on the owner); waited for or left running."""
        code = f"import sys; sys.argv = ['x', {str(VMID)!r}, {script!r}, {'1' if wait else '0'!r}]\n{GUEST_EXEC}"
        out = self.qm(self.owner, "shell", "-c", code, sub=False)
        if wait and json.loads(out.strip().splitlines()[-1]).get("exitcode") != 0:
            raise RuntimeError(f"guest command failed: {out}")

    def dirty(self) -> None:
        """The guest's random working set, then its rewriting in the background; SETTLE seconds of it."""
        deadline = time.monotonic() + 180
        while manage(self.lab, self.lab.nodes[self.owner], "qm", "agent", str(VMID), "ping").returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the guest agent did not answer")
            time.sleep(1)
        self.guest(FILL, wait=True)
        self.guest(DIRTY, wait=False)
        time.sleep(SETTLE)

    def nodes(self) -> tuple[LabNode, LabNode]:
        return self.lab.nodes[self.owner], self.lab.nodes[1 - self.owner]

    def argv(self) -> list[str]:
        return shlex.split(self.qm(self.owner, "showcmd", str(VMID)).strip())

    def api(self, transport: str) -> dict[str, Any]:
        """``POST /nodes/<source>/qemu/<vmid>/migrate`` as root@pam, timed (inside the source node's namespace,
        by :data:`API_MIGRATE`) from the request to the task's end seen in its status; the task log parsed."""
        source, target = self.nodes()
        self.qm(self.owner, "start", str(VMID))
        self.dirty()
        values = {"target": target.name, "online": "1"}
        if transport == "insecure":
            values |= {"migration_type": "insecure", "migration_network": self._network(source)}
        ca = source.directory / "etc" / "pve" / "pve-root-ca.pem"
        argv = [sys.executable, "-c", API_MIGRATE, source.address, str(ca), self.lab.root_password,
                f"/nodes/{source.name}/qemu/{VMID}/migrate", json.dumps(values)]  # fmt: skip
        done = self.lab.run(source, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = done.communicate(timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"the API migration failed:\n{out}\n{err}")
        answer = json.loads(out.strip().splitlines()[-1])
        log = "\n".join(answer["log"])
        if answer["exitstatus"] != "OK" or "migration finished successfully" not in log:
            raise RuntimeError(f"the migration task ended {answer['exitstatus']}:\n{log}")
        print(log, flush=True)
        self.owner = 1 - self.owner
        self.qm(self.owner, "stop", str(VMID))
        return {"seconds": answer["seconds"], **self._summary(log)}

    @staticmethod
    def _network(node: LabNode) -> str:
        return ".".join(node.address.split(".")[:3]) + ".0/24"

    @staticmethod
    def _summary(out: str) -> dict[str, Any]:
        found = re.search(r"average migration speed: ([\d.]+) (\w+)/s - downtime (\d+) ms", out)
        if found is None:
            raise RuntimeError(f"no summary line in:\n{out}")
        last = re.findall(r"transferred ([\d.]+ \w+) of", out)
        return {
            "downtime": int(found.group(3)),
            "speed": f"{found.group(1)} {found.group(2)}/s",
            "transferred": last[-1] + " (last progress line)" if last else "?",
        }

    def cli(self, transport: str) -> dict[str, Any]:
        source, target = self.nodes()
        self.qm(self.owner, "start", str(VMID))
        self.dirty()
        options = ["--online", "1"]
        if transport == "insecure":
            options += ["--migration_type", "insecure", "--migration_network", self._network(source)]
        begin = time.perf_counter()
        process = self.lab.run(
            source,
            [sys.executable, str(REPO / "manage.py"), "qm", "migrate", str(VMID), target.name, *options],
            env={**source.env, "PATH": PATH},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = process.communicate(timeout=900)
        elapsed = time.perf_counter() - begin
        if process.returncode != 0 or "migration finished successfully" not in out:
            raise RuntimeError(f"qm migrate failed:\n{out}\n{err}")
        print(out, flush=True)  # the task log: where our time goes
        self.owner = 1 - self.owner
        self.qm(self.owner, "stop", str(VMID))
        return {"seconds": elapsed, **self._summary(out)}

    def raw(self, transport: str) -> dict[str, Any]:
        source, target = self.nodes()
        argv = self.argv()
        there = [arg.replace(str(source.directory), str(target.directory)) for arg in argv]
        src_qmp, dst_qmp = qmp_socket(argv), qmp_socket(there)
        self.qm(self.owner, "shell", "-c", LOCK_MIGRATE, sub=False)
        self._launch(source, argv)
        wait_for(lambda: os.path.exists(src_qmp) and qmp(src_qmp, "query-status")["status"] == "running", 60, "src")
        self.dirty()
        tunnel = None
        begin = time.perf_counter()
        try:
            if transport == "secure":
                remote = str(target.directory / "run" / f"raw-{VMID}.migrate")
                local = str(source.directory / "run" / f"raw-{VMID}.tunnel")
                self._launch(target, [*there, "-S", "-incoming", f"unix:{remote}"])
                tunnel = self._tunnel(source, target, local, remote)
                uri = f"unix:{local}"
            else:
                uri = f"tcp:{target.address}:{RAW_PORT}"
                self._launch(target, [*there, "-S", "-incoming", uri])
            wait_for(lambda: os.path.exists(dst_qmp), 30, "the target's QMP socket")
            qmp(src_qmp, "migrate-set-capabilities", {"capabilities": [{"capability": "auto-converge", "state": True}]})
            qmp(src_qmp, "migrate-set-parameters", PARAMS)
            qmp(src_qmp, "migrate", {"uri": uri})
            while (info := qmp(src_qmp, "query-migrate"))["status"] not in ("completed", "failed", "cancelled"):
                time.sleep(POLL)
            if info["status"] != "completed":
                raise RuntimeError(f"raw migration {info['status']}: {info.get('error-desc')}")
            qmp(dst_qmp, "cont")
            elapsed = time.perf_counter() - begin
            qmp(src_qmp, "quit")
        finally:
            if tunnel is not None:
                tunnel.terminate()
                tunnel.wait(10)
            for path in (src_qmp, dst_qmp):
                with contextlib.suppress(OSError, RuntimeError, ConnectionError):
                    qmp(path, "quit")
            wait_for(lambda: not self._qemus(), 30, "the raw QEMUs to end")
            self.qm(self.owner, "unlock", str(VMID))
        return {
            "seconds": elapsed,
            "downtime": int(info["downtime"]),
            "speed": f"{info['ram']['mbps'] / 8:.1f} MB/s",
            "transferred": f"{info['ram']['transferred'] / 1024**2:.0f} MiB",
            "total_ms": int(info["total-time"]),
        }

    def _launch(self, node: LabNode, argv: list[str]) -> None:
        """A QEMU argv run as is in the node's namespace (it daemonizes)."""
        Path(argv[argv.index("-pidfile") + 1]).parent.mkdir(parents=True, exist_ok=True)
        done = self.lab.run(node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = done.communicate(timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"QEMU on {node.name} failed: {err.decode(errors='replace')}")

    def _tunnel(self, source: LabNode, target: LabNode, local: str, remote: str) -> subprocess.Popen:
        """``ssh -N -L local:remote`` with the source node's key, as vms/services/migration/online.py opens it."""
        Path(local).unlink(missing_ok=True)
        known = Path(source.env.get("PVE_ETC_DIR", source.directory / "etc" / "pve")) / "priv" / "known_hosts"
        argv = ["ssh", "-N", "-i", str(Path(source.env["PVE_SSH_DIR"]) / "id_ed25519"),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={target.name}",
                "-o", f"UserKnownHostsFile={known}", "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindUnlink=yes", "-L", f"{local}:{remote}", f"root@{target.address}"]  # fmt: skip
        tunnel = self.lab.run(source, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: os.path.exists(local) or tunnel.poll() is not None, 30, "the SSH tunnel")
        if tunnel.poll() is not None:
            raise RuntimeError(f"ssh tunnel failed: {tunnel.stderr.read() if tunnel.stderr else ''}")
        return tunnel

    def _qemus(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if entry.name.isdigit() and b"qemu-system" in argv[0] and f"/{VMID}.pid".encode() in b" ".join(argv):
                    pids.append(int(entry.name))
        return pids


def trusts_both(known: Path) -> bool:
    return known.exists() and known.read_text().count("\n") == 2


@contextlib.contextmanager
def lab(directory: Path) -> Iterator[LabCluster]:
    with running_lab(directory, 2, prepare=whole_nodes, kind="node", timeout=180) as cluster:
        for node in cluster.nodes:
            known = node.directory / "etc" / "pve" / "priv" / "known_hosts"
            wait_for(partial(trusts_both, known), 60, f"{known}", every=0.5)
            wait_for(partial(web_answers, cluster, node), 180, f"{node.name}'s web server", every=1)
        yield cluster


def measure(runs: int, transports: list[str], ways: list[str]) -> dict[str, Any]:
    image = build_guest_image()
    kinds = [*ways, "raw"]
    results: dict[str, list[dict[str, Any]]] = {f"{kind} {t}": [] for t in transports for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="pve-migbench-") as tmp, lab(Path(tmp)) as cluster:
        bench = Bench(cluster)
        boot = f"-kernel {image.kernel} -initrd {image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
        bench.qm(0, "create", str(VMID), "--memory", "1024", "--kvm", "0", "--agent", "1", "--args", boot)
        try:
            for run in range(runs):
                for transport in transports:
                    order = kinds if run % 2 == 0 else kinds[::-1]
                    for kind in order:
                        result = getattr(bench, kind)(transport)
                        print(f"run {run + 1} {kind} {transport}: {result}", flush=True)
                        results[f"{kind} {transport}"].append(result)
            argv = bench.argv()
        finally:
            bench.qm(bench.owner, "stop", str(VMID), check=False)
            for pid in bench._qemus():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
    return {"results": results, "argv": argv, "qemu": argv[0]}


def report(args: argparse.Namespace, transports: list[str], ways: list[str], measured: dict[str, Any]) -> str:
    results = measured["results"]
    lines = [
        heading(
            "Live migration of a 1 GiB guest dirtying its RAM: the API's and qm's migrate --online against raw QMP migrate"
        ),
        "",
        f"Command: `flock /tmp/pve-lab.lock {command_line(args, 'runs', 'transport', 'via').strip('`')}` "
        f"({os.cpu_count()} CPUs)",
        "",
        f"Test guest (busybox initramfs, qemu-ga), memory 1024, KVM {'on' if '-enable-kvm' in measured['argv'] or 'accel=kvm' in ' '.join(measured['argv']) else 'off'}, "
        "2 lab nodes (namespaces, one host); the guest rewrites 4 MiB of a 256 MiB random tmpfs file every 50 ms. "
        f"{args.runs} runs, alternating the order of ours and raw; medians; downtime-limit 100 ms, max-bandwidth 16 GiB/s, auto-converge on both.",
        "",
        "api: `POST .../migrate` to the task's end (the node's worker runs it); cli: `qm migrate` (its own "
        "Python/Django start included).",
        "",
        "| transport | ours | ours total | raw total | ratio (target < 1.3) | ours downtime | raw downtime | raw transferred | ours average speed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for transport in transports:
        raw = results[f"raw {transport}"]
        r_s, r_d = statistics.median(r["seconds"] for r in raw), statistics.median(r["downtime"] for r in raw)
        for way in ways:
            ours = results[f"{way} {transport}"]
            o_s, o_d = statistics.median(r["seconds"] for r in ours), statistics.median(r["downtime"] for r in ours)
            lines.append(
                f"| {transport} | {way} | {o_s:.2f} s | {r_s:.2f} s | {o_s / r_s:.2f} ({'met' if o_s / r_s < 1.3 else 'NOT met'}) "
                f"| {o_d:.0f} ms ({'met' if o_d < 100 else 'NOT met'}) | {r_d:.0f} ms | "
                f"{', '.join(r['transferred'] for r in raw)} | {', '.join(r['speed'] for r in ours)} |"
            )
    lines += ["", "Each run: " + "; ".join(
        f"{key}: " + ", ".join(f"{r['seconds']:.2f} s/{r['downtime']} ms" for r in value) for key, value in results.items()
    ) + ".", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", choices=("secure", "insecure", "both"), default="both")
    parser.add_argument("--via", choices=("api", "cli", "both"), default="both")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the lab and its QEMUs are cleaned up
    transports = ["secure", "insecure"] if args.transport == "both" else [args.transport]
    ways = ["api", "cli"] if args.via == "both" else [args.via]
    measured = measure(args.runs, transports, ways)
    publish(report(args, transports, ways, measured), append=not args.no_append)


if __name__ == "__main__":
    main()
