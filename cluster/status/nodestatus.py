"""Live statistics of the local node, read from /proc (Proxmox's /nodes and /cluster/resources fields)."""

from __future__ import annotations

import os
import shutil
import time

from django.conf import settings


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * 1024
    return values


def uptime() -> int:
    with open("/proc/uptime") as handle:
        return int(float(handle.read().split()[0]))


def local_stats() -> dict[str, object]:
    """cpu (load / cores, a fraction), memory and root disk of this host."""
    cpus = os.cpu_count() or 1
    mem = _meminfo()
    disk = shutil.disk_usage(settings.PVE_DATA_DIR)
    return {
        "cpu": round(min(os.getloadavg()[0] / cpus, 1.0), 4),
        "maxcpu": cpus,
        "mem": mem.get("MemTotal", 0) - mem.get("MemAvailable", 0),
        "maxmem": mem.get("MemTotal", 0),
        "disk": disk.used,
        "maxdisk": disk.total,
        "uptime": uptime(),
        "loadavg": [f"{value:.2f}" for value in os.getloadavg()],
        "time": int(time.time()),
    }


def volatile_status() -> dict[str, object]:
    """What this node publishes to the others over CPG: address, load, memory, clock, recent tasks."""
    from portal.tasks.entries import recent_tasks

    return {"ip": settings.PVE_NODE_ADDRESS or "", **local_stats(), "tasks": recent_tasks()}
