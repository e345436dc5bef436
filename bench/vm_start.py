#!/usr/bin/env python3
"""VM start through the API against launching the same QEMU command line by hand, to QMP ``running``.

Usage: .venv/bin/python bench/vm_start.py [--runs 10] [--no-append]

One node (replicator, a private redis-server, the node's real Celery worker) in a temporary
directory and one firmware-only VM (no disk, 128 MiB, KVM as the runtime chooses). Measured in one
run, alternating, ``--runs`` times each after one unmeasured warm-up of each:
  1. API: ``POST /nodes/<node>/qemu/<vmid>/status/start`` (root@pam, Django's test client) runs
     the ``qmstart`` task on the worker; the clock stops when QMP ``query-status`` says ``running``;
  2. by hand: the argv ``qm showcmd <vmid>`` prints, run as is (it daemonizes), until QMP says
     ``running``.
QEMU is stopped between runs. Target: API p50 under 1.5x the hand launch and under 1 s added.
Results are appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import command_line, heading, percentile, publish  # noqa: E402
from portal.runner.celery_cli import worker_argv  # noqa: E402
from tests.celery_harness import RedisServer  # noqa: E402
from tests.harness import ReplicatorProcess, manage, node_environment  # noqa: E402

NODE = "benchnode"
VMID = 9100
API = "/api2/json"
POLL = 0.005  # seconds between QMP polls, the same for both sides


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise RuntimeError(f"timed out waiting for {what}")


class Worker:
    """The node's worker exactly as the runner starts it (``worker_argv``), in a session of its own."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        argv = worker_argv(sys.executable, queue=f"node.{NODE}", node=NODE, log_level="INFO")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: " ready." in self.log_path.read_text(errors="replace") or self._died(), timeout, "the worker")
        self._died(check=True)

    def _died(self, check: bool = False) -> bool:
        assert self.process is not None
        if self.process.poll() is not None and check:
            raise RuntimeError(f"worker exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        return self.process.poll() is not None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def node(tmp: Path) -> Iterator[dict[str, str]]:
    """A node's environment with its replicator, broker and worker running; all stopped on exit."""
    data = tmp / "node"
    data.mkdir()
    env = {**node_environment(data, node=NODE), "PVE_LOG_LEVEL": "ERROR"}
    manage(env, "migrate", "-v0")
    manage(env, "migrate", "--database", "cluster", "-v0")
    with contextlib.ExitStack() as stack:
        redis = RedisServer(data / "redis.sock")
        stack.callback(redis.stop)
        redis.start()
        replicator = ReplicatorProcess(env)
        stack.callback(replicator.stop)
        replicator.start()
        worker = Worker(env, tmp / "worker.log")
        stack.callback(worker.stop)
        worker.start()
        yield env


def running(vmid: int) -> bool:
    from vms.qemu import qmp

    try:
        return qmp.status(vmid, timeout=2) == "running"
    except qmp.QMPCommandError:
        return False


def stop_qemu(vmid: int) -> None:
    from vms.qemu import process

    process.terminate(vmid, timeout=10, log=lambda line: None)
    process.cleanup(vmid, {})


def api_start(client: Any, vmid: int) -> float:
    """Seconds from the POST to QMP ``running``; then the task must end OK."""
    begin = time.perf_counter()
    answer = client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/status/start")
    if answer.status_code != 200:
        raise RuntimeError(f"start refused: {answer.status_code} {answer.content!r}")
    wait_for(lambda: running(vmid), 60, "QMP running (API)")
    elapsed = time.perf_counter() - begin
    path = f"{API}/nodes/{NODE}/tasks/{answer.json()['data']}/status"
    state = wait_for(lambda: (s := client.get(path).json()["data"])["status"] == "stopped" and s, 60, "the task")
    if state["exitstatus"] != "OK":
        raise RuntimeError(f"qmstart ended {state['exitstatus']!r}")
    return elapsed


def hand_start(argv: list[str], vmid: int) -> float:
    """Seconds from running ``argv`` to QMP ``running``."""
    begin = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60, start_new_session=True)
    wait_for(lambda: running(vmid), 60, "QMP running (by hand)")
    return time.perf_counter() - begin


def measure(env: dict[str, str], runs: int) -> dict[str, Any]:
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client

    from vms.models import VM
    from vms.qemu import process

    VM(vmid=VMID, node_id=NODE, config={"name": "startbench", "memory": "128"}).save()
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"}).json()
    client.cookies["PVEAuthCookie"] = data["data"]["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["data"]["CSRFPreventionToken"]
    api: list[float] = []
    hand: list[float] = []
    try:
        api_start(client, VMID)  # warm-up: the first start records meta (creation-qemu) in the config
        stop_qemu(VMID)
        shown = manage(env, "qm", "showcmd", str(VMID)).stdout.strip()
        argv = shlex.split(shown)
        if argv != process.command_for(VMID, VM.objects.get(vmid=VMID).full_config()):
            raise RuntimeError("qm showcmd differs from vms.qemu.process.command_for")
        hand_start(argv, VMID)  # warm-up
        stop_qemu(VMID)
        for _ in range(runs):
            api.append(api_start(client, VMID))
            stop_qemu(VMID)
            hand.append(hand_start(argv, VMID))
            stop_qemu(VMID)
    finally:
        stop_qemu(VMID)
    return {"api": api, "hand": hand, "kvm": process.kvm_usable(), "qemu": process.qemu_version(), "argv": shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="pve-startbench-") as tmp, node(Path(tmp)) as env:
        result = measure(env, args.runs)
    api, hand = result["api"], result["hand"]
    api50, api90 = percentile(api, 0.5) * 1e3, percentile(api, 0.9) * 1e3
    hand50, hand90 = percentile(hand, 0.5) * 1e3, percentile(hand, 0.9) * 1e3
    ratio, added = api50 / hand50, api50 - hand50
    met = "met" if ratio < 1.5 and added < 1000 else "NOT met"
    text = "\n".join(
        [
            heading("VM start through the API against QEMU by hand"),
            "",
            f"Command: {command_line(args, 'runs')} ({os.cpu_count()} CPUs)",
            "",
            f"Firmware-only VM (no disk, 128 MiB), QEMU {result['qemu']}, KVM {'on' if result['kvm'] else 'off'}; "
            f"{args.runs} runs each, alternating, after one warm-up each; to QMP `running`.",
            "",
            f"- API (`POST .../status/start`, `qmstart` task on the node's Celery worker): "
            f"p50 {api50:.0f} ms, p90 {api90:.0f} ms.",
            f"- The same argv (`qm showcmd`) by hand: p50 {hand50:.0f} ms, p90 {hand90:.0f} ms.",
            f"- Ratio of p50s {ratio:.2f}, {added:.0f} ms added (target under 1.5x and under 1 s: {met}).",
            "",
        ]
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
