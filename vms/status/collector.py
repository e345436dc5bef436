"""One round of pvestatd: this node, its running VMs and its storages, as counters turned into rates.

The round's result goes three ways: into the round-robin history (:mod:`vms.status.rrd`), to a
run file the replicator reads when it sends this node's volatile status to the others
(:func:`published`, registered into ``replicator.volatile``), and to this node's own API
(:func:`latest`). QEMU is asked over QMP once per VM per round (:mod:`vms.status.qmp_batch`); nothing
else in the stack polls it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from vms import runtime_paths
from vms.status import procfs, qmp_batch
from vms.status.rrd import RRDStore

STALE_ROUNDS = 3  # a snapshot older than this many intervals is not published (the collector is gone)


def snapshot_path() -> Path:
    return Path(settings.PVE_RUN_DIR) / "pvestatd.json"


def _cpus(config: dict[str, Any]) -> int:
    def number(key: str) -> int:
        text = str(config.get(key, "")).split(",")[0]
        return int(text) if text.isdigit() else 0

    return number("vcpus") or max(number("cores"), 1) * max(number("sockets"), 1)


def _mebibytes(value: object, default: int) -> int:
    text = str(value or default).removeprefix("current=").split(",")[0]
    return int(text) if text.isdigit() else default


def vm_limits(config: dict[str, Any]) -> dict[str, int]:
    """maxcpu and maxmem of a VM from its config (Proxmox's defaults: 1 core, 512 MiB)."""
    return {"cpus": _cpus(config), "maxmem": _mebibytes(config.get("memory"), 512) * 1024 * 1024}


@dataclass
class _VMPrevious:
    when: float
    pid: int
    sample: procfs.ProcessSample
    netin: int
    netout: int
    diskread: int
    diskwrite: int


def _rate(now: int, before: int, seconds: float) -> float:
    return max(now - before, 0) / seconds if seconds > 0 else 0.0


class Collector:
    """Keeps the previous readings, so each round yields cpu fractions and byte rates."""

    def __init__(self, node: str | None = None, store: RRDStore | None = None) -> None:
        self.node = node or settings.PVE_NODE_NAME
        self.store = store
        self.previous_cpu: tuple[float, tuple[int, int, int]] | None = None
        self.previous_net: tuple[float, tuple[int, int]] | None = None
        self.previous_vms: dict[int, _VMPrevious] = {}

    # --- this node ---------------------------------------------------------------------------

    def node_status(self, now: float) -> dict[str, Any]:
        times = procfs.cpu_times()
        cpu = iowait = 0.0
        if self.previous_cpu is not None:
            _, (total0, idle0, wait0) = self.previous_cpu
            elapsed = times[0] - total0
            if elapsed > 0:
                cpu = min(max(1.0 - (times[1] - idle0) / elapsed, 0.0), 1.0)
                iowait = min(max((times[2] - wait0) / elapsed, 0.0), 1.0)
        self.previous_cpu = (now, times)
        net = procfs.host_net_counters()
        netin = netout = 0.0
        if self.previous_net is not None:
            when, (in0, out0) = self.previous_net
            netin, netout = _rate(net[0], in0, now - when), _rate(net[1], out0, now - when)
        self.previous_net = (now, net)
        mem = procfs.meminfo()
        total, available = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
        swap_total, swap_free = mem.get("SwapTotal", 0), mem.get("SwapFree", 0)
        root = procfs.statvfs("/") or {"total": 0, "used": 0, "avail": 0, "free": 0}
        info = procfs.cpuinfo()
        return {
            "cpu": round(cpu, 6),
            "wait": round(iowait, 6),
            "maxcpu": info["cpus"],
            "loadavg": [f"{value:.2f}" for value in os.getloadavg()],
            "memory": {
                "total": total,
                "used": total - available,
                "free": mem.get("MemFree", 0),
                "available": available,
            },
            "swap": {"total": swap_total, "used": swap_total - swap_free, "free": swap_free},
            "rootfs": root,
            "uptime": int(procfs.uptime()),
            "kversion": " ".join(procfs.kernel()[k] for k in ("sysname", "release", "version")),
            "current-kernel": procfs.kernel(),
            "cpuinfo": {k: v for k, v in info.items() if k != "flags"},
            "qemu-version": procfs.qemu_version(),
            "netin": netin,
            "netout": netout,
        }

    # --- running VMs -------------------------------------------------------------------------

    def running_vms(self) -> dict[int, int]:
        """vmid -> pid of every QEMU of this node that runs (its pid file checked against the process)."""
        found: dict[int, int] = {}
        for pidfile in runtime_paths.run_dir().glob("*.pid"):
            if pidfile.stem.isdigit():
                pid = runtime_paths.vm_pid(int(pidfile.stem))
                if pid is not None:
                    found[int(pidfile.stem)] = pid
        return found

    def vm_status(
        self, now: float, running: dict[int, int], configs: dict[int, dict[str, Any]]
    ) -> dict[int, dict[str, Any]]:
        run = runtime_paths.run_dir()  # vm_file's layout, without its mkdir for every VM
        answers = qmp_batch.query_all({vmid: run / f"{vmid}.qmp" for vmid in running})
        host_uptime, taps = procfs.uptime(), procfs.taps()
        result: dict[int, dict[str, Any]] = {}
        previous, self.previous_vms = self.previous_vms, {}
        for vmid, pid in running.items():
            sample = procfs.process_sample(pid)
            if sample is None:
                continue  # ended while we looked
            limits = vm_limits(configs.get(vmid, {}))
            answer = answers.get(vmid) or {}
            netin, netout = procfs.tap_counters(taps.get(vmid, []))
            entry: dict[str, Any] = {
                "status": "running",
                "pid": pid,
                "uptime": procfs.process_uptime(sample, host_uptime),
                "cpus": limits["cpus"],
                "maxmem": limits["maxmem"],
                "mem": sample.rss,
                "cpu": 0.0,
                "netin": netin,
                "netout": netout,
                "diskread": int(answer.get("diskread", 0)),
                "diskwrite": int(answer.get("diskwrite", 0)),
                "qmpstatus": answer.get("qmpstatus", "unknown") if answers.get(vmid) is not None else "unknown",
                "rates": {"netin": 0.0, "netout": 0.0, "diskread": 0.0, "diskwrite": 0.0},
            }
            if "balloon" in answer:
                entry["balloon"] = answer["balloon"]
            before = previous.get(vmid)
            if before is not None and before.pid == pid and now > before.when:
                seconds = now - before.when
                used = (sample.cpu_ticks - before.sample.cpu_ticks) / procfs.CLOCK_TICKS
                entry["cpu"] = round(min(max(used / seconds / limits["cpus"], 0.0), 1.0), 6)
                for key, old in (
                    ("netin", before.netin),
                    ("netout", before.netout),
                    ("diskread", before.diskread),
                    ("diskwrite", before.diskwrite),
                ):
                    entry["rates"][key] = _rate(int(entry[key]), old, seconds)
            self.previous_vms[vmid] = _VMPrevious(
                now, pid, sample, netin, netout, entry["diskread"], entry["diskwrite"]
            )
            result[vmid] = entry
        return result

    # --- storages ----------------------------------------------------------------------------

    def storage_status(self) -> dict[str, dict[str, Any]]:
        from vms.models import Storage

        result: dict[str, dict[str, Any]] = {}
        for storage in Storage.objects.filter(disable=False):
            nodes = [n.strip() for n in storage.nodes.split(",") if n.strip()]
            if nodes and self.node not in nodes:
                continue
            usage = procfs.statvfs(storage.path) if storage.path and os.path.isdir(storage.path) else None
            result[storage.storeid] = {
                "type": storage.type,
                "content": storage.content,
                "shared": int(storage.shared),
                "active": int(usage is not None),
                "enabled": 1,
                **(usage or {"total": 0, "used": 0, "avail": 0}),
            }
        return result

    # --- the round ---------------------------------------------------------------------------

    def round(self, now: float | None = None) -> dict[str, Any]:
        """Collect everything once; feed the history; return the snapshot (also written to the run file)."""
        from vms.models import VM

        now = time.time() if now is None else now
        node = self.node_status(now)
        running = self.running_vms()
        configs = dict(VM.objects.filter(vmid__in=list(running)).values_list("vmid", "config"))
        vms = self.vm_status(now, running, configs)
        storages = self.storage_status()
        if self.store is not None:
            self.feed(now, node, vms, storages)
        snapshot = {"time": now, "node": self.node, "status": node, "vms": vms, "storages": storages}
        write_snapshot(snapshot)
        return snapshot

    def feed(
        self, now: float, node: dict[str, Any], vms: dict[int, dict[str, Any]], storages: dict[str, dict[str, Any]]
    ) -> None:
        assert self.store is not None
        self.store.update(
            f"node/{self.node}",
            now,
            [
                float(node["loadavg"][0]),
                node["maxcpu"],
                node["cpu"],
                node["wait"],
                node["memory"]["total"],
                node["memory"]["used"],
                node["swap"]["total"],
                node["swap"]["used"],
                node["rootfs"]["total"],
                node["rootfs"]["used"],
                node["netin"],
                node["netout"],
            ],
        )
        for vmid, entry in vms.items():
            rates = entry["rates"]
            self.store.update(
                f"vm/{vmid}",
                now,
                [
                    entry["cpus"],
                    entry["cpu"],
                    entry["maxmem"],
                    entry["mem"],
                    0,
                    0,
                    rates["netin"],
                    rates["netout"],
                    rates["diskread"],
                    rates["diskwrite"],
                ],
            )
        for storeid, entry in storages.items():
            if entry["active"]:
                self.store.update(f"storage/{storeid}", now, [entry["total"], entry["used"]])


def write_snapshot(snapshot: dict[str, Any]) -> None:
    """Replace the run file (0600) by rename, without fsync: it is rewritten every round and
    means nothing after a reboot, so it costs no disk flush."""
    target = snapshot_path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(snapshot))  # dumps, not dump: the C encoder in one call
    os.replace(temporary, target)


def latest(max_age: float | None = None) -> dict[str, Any] | None:
    """The collector's last snapshot, or None when there is none or it is stale."""
    max_age = STALE_ROUNDS * settings.PVE_STATUS_INTERVAL + 2 if max_age is None else max_age
    try:
        data: dict[str, Any] = json.loads(snapshot_path().read_text())
    except (OSError, ValueError):
        return None
    if time.time() - float(data.get("time", 0)) > max_age:
        return None
    data["vms"] = {int(vmid): entry for vmid, entry in data.get("vms", {}).items()}
    return data


def published() -> dict[str, Any]:
    """The fields this node adds to its volatile status: its running VMs and its storages.

    Registered into ``replicator.volatile``; reads the run file only, so the replicator never
    waits for QEMU. Nothing when the collector is not running (a node without live status).
    """
    data = latest()
    if data is None:
        return {}
    vms = {str(vmid): {k: v for k, v in entry.items() if k != "rates"} for vmid, entry in data["vms"].items()}
    return {"vms": vms, "storages": data["storages"], "vmstatus_time": data["time"]}
