"""Long operations as Celery tasks: a real worker (``celery -A portal.celery worker``) on a real redis.

Submit -> the worker runs it -> status and log through the API; errors, warnings, soft and hard
time limits, routing to a node's own queue, VM lock leases (taken atomically, released on every
outcome), stopping, redelivery and a worker killed with SIGKILL mid-task.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest
from django.test import Client

from portal.models import Task
from portal.tasks import index, logs, reconcile, runner
from portal.tasks.exceptions import UnknownOperation
from portal.tasks.locks import LockSpec
from portal.tasks.upid import parse_upid, process_start_ticks
from tests.celery_harness import CeleryWorker
from tests.portal import task_operations  # noqa: F401  (the operations the worker runs)
from vms.exceptions import VMLocked
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
# A message delivered to a worker that did not acknowledge it comes back after 2 s, so the tests
# see redeliveries (of running tasks, and after a worker was killed) within seconds.
WORKER_ENV = {"PVE_TASK_REDELIVERY_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def root() -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"}).json()
    client.cookies["PVEAuthCookie"] = data["data"]["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["data"]["CSRFPreventionToken"]
    return client


@pytest.fixture(scope="module")
def vms() -> list[int]:
    """VMs whose lock the tests take (one per test, so no test waits for another's lease)."""
    ids = list(range(7600, 7610))
    for vmid in ids:
        vm = VM.objects.filter(vmid=vmid).first()
        if vm is None:
            VM(vmid=vmid, node_id=NODE, config={"name": f"lease{vmid}"}).save()
        elif vm.lock:
            vm.lock, vm.lock_owner = "", ""
            vm.save()
    return ids


def status(client: Client, upid: str) -> dict:
    response = client.get(f"{API}/nodes/{parse_upid(upid).node}/tasks/{upid}/status")
    assert response.status_code == 200, response.content
    return response.json()["data"]


def wait_stopped(client: Client, upid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = status(client, upid)
        if data["status"] == "stopped":
            return data
        time.sleep(0.1)
    raise AssertionError(f"{upid} still running: {Task.objects.get(upid=upid).__dict__}")


def wait_for(predicate, timeout: float = 30, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(client: Client, upid: str) -> list[str]:
    data = client.get(f"{API}/nodes/{parse_upid(upid).node}/tasks/{upid}/log?limit=0").json()
    return [entry["t"] for entry in data["data"]]


def vm_lock(vmid: int) -> tuple[str, str]:
    vm = VM.objects.get(vmid=vmid)
    return vm.lock, vm.lock_owner


def handled(worker: CeleryWorker, upid: str) -> str:
    """The worker's log line for a task message it is done with (discarded or run, and acknowledged), or ""."""
    pending = reconcile.pending_task_ids(f"node.{NODE}")
    if pending is None or upid in pending:
        return ""
    for line in worker.log_text().splitlines():
        if (
            f"Discarding revoked task: cluster.run_task[{upid}]" in line
            or f"cluster.run_task[{upid}] succeeded" in line
        ):
            return line
    return ""


def test_submitted_task_runs_in_the_worker_and_reports_through_the_api(root, celery_worker):
    upid = runner.submit("testnode", "", "root@pam", "test.node")
    assert status(root, upid)["status"] == "running"  # the API answers at once, queued or running
    assert parse_upid(upid).pid == os.getpid()  # the UPID names the submitting process
    data = wait_stopped(root, upid)
    assert data["exitstatus"] == "OK" and data["upid"] == upid and data["user"] == "root@pam"
    lines = log_lines(root, upid)
    assert lines[-1] == "TASK OK"
    task = Task.objects.get(upid=upid)
    assert lines[0] == f"running on {NODE} in process {task.pid}"
    assert task.worker == celery_worker.hostname and task.pid != os.getpid()
    assert task.pid in celery_worker.children()  # a pool process of the worker ran it
    listed = root.get(f"{API}/nodes/{NODE}/tasks?typefilter=testnode").json()
    assert upid in [item["upid"] for item in listed["data"]]


def test_failure_warnings_and_list_filters(root, celery_worker):
    failed = runner.submit("testfail", "", "root@pam", "test.fail", message="disk on fire\nsecond line")
    warned = runner.submit("testwarn", "", "root@pam", "test.warn", count=2)
    assert wait_stopped(root, failed)["exitstatus"] == "disk on fire"
    assert log_lines(root, failed)[-2:] == ["about to fail", "TASK ERROR: disk on fire"]
    assert wait_stopped(root, warned)["exitstatus"] == "WARNINGS: 2"
    assert log_lines(root, warned) == ["WARN: warning 1", "WARN: warning 2", "TASK WARNINGS: 2"]
    errors = [item["upid"] for item in root.get(f"{API}/nodes/{NODE}/tasks?errors=1&limit=500").json()["data"]]
    assert failed in errors and warned in errors  # errors=1 drops only OK
    only_ok = [item["upid"] for item in root.get(f"{API}/nodes/{NODE}/tasks?statusfilter=ok&limit=500").json()["data"]]
    assert failed not in only_ok and warned not in only_ok
    warnings = root.get(f"{API}/nodes/{NODE}/tasks?statusfilter=warning&typefilter=testwarn").json()
    assert [item["upid"] for item in warnings["data"]] == [warned] and warnings["total"] == 1
    assert (
        warnings["data"][0]["status"] == "WARNINGS: 2"
        and warnings["data"][0]["endtime"] >= parse_upid(warned).starttime
    )


def test_unknown_operation_is_refused_before_anything_is_queued():
    before = Task.objects.count()
    with pytest.raises(UnknownOperation):
        runner.submit("x", "", "root@pam", "no.such.operation")
    assert Task.objects.count() == before


def test_lease_is_held_while_running_refused_to_others_and_released(root, celery_worker, vms, etc_dir):
    vmid = vms[0]
    upid = runner.submit(
        "vzdump", str(vmid), "root@pam", "test.sleep", lock=LockSpec("vm", str(vmid), "backup"), seconds=1.5
    )
    wait_for(lambda: vm_lock(vmid) == ("backup", upid), what="the lease")
    config = etc_dir / "nodes" / NODE / "qemu-server" / f"{vmid}.conf"
    wait_for(lambda: "lock: backup" in config.read_text(), what="lock in the config file")
    with pytest.raises(VMLocked, match=f"VM {vmid} is locked \\(backup\\)"):
        runner.submit("qmigrate", str(vmid), "root@pam", "test.echo", lock=LockSpec("vm", str(vmid), "migrate"))
    assert wait_stopped(root, upid)["exitstatus"] == "OK"
    assert vm_lock(vmid) == ("", "")


def test_two_tasks_racing_for_one_lease_one_wins(root, celery_worker, vms):
    vmid = vms[1]
    spec = LockSpec("vm", str(vmid), "migrate")
    first = runner.submit("qmigrate", str(vmid), "root@pam", "test.sleep", lock=spec, seconds=1.0)
    second = runner.submit("qmigrate", str(vmid), "root@pam", "test.sleep", lock=spec, seconds=1.0)
    results = sorted([wait_stopped(root, first)["exitstatus"], wait_stopped(root, second)["exitstatus"]])
    assert results == ["OK", f"VM {vmid} is locked (migrate)"]
    assert vm_lock(vmid) == ("", "")


def test_soft_time_limit_ends_the_task_as_an_error_and_releases_the_lease(root, celery_worker, vms):
    vmid = vms[2]
    lock = LockSpec("vm", str(vmid), "backup")
    upid = runner.submit("vzdump", str(vmid), "root@pam", "test.sleep", lock=lock, time_limit=1, seconds=30)
    started = time.monotonic()
    assert wait_stopped(root, upid, timeout=20)["exitstatus"] == "task exceeded its time limit (1 s)"
    assert time.monotonic() - started < 10
    assert log_lines(root, upid)[-1] == "TASK ERROR: task exceeded its time limit (1 s)"
    assert vm_lock(vmid) == ("", "")


def test_hard_time_limit_kills_a_stuck_task_and_the_worker_carries_on(root, celery_worker, vms):
    vmid = vms[3]
    lock = LockSpec("vm", str(vmid), "backup")
    upid = runner.submit("vzdump", str(vmid), "root@pam", "test.stuck", lock=lock, time_limit=1, seconds=60)
    wait_for(lambda: Task.objects.get(upid=upid).pid, what="the task to start")
    pid = Task.objects.get(upid=upid).pid
    assert wait_stopped(root, upid, timeout=30)["exitstatus"] == "task exceeded its time limit (1 s)"
    lines = log_lines(root, upid)
    assert "soft limit ignored" in lines and lines[-1].startswith("TASK ERROR: task exceeded")
    wait_for(lambda: pid not in celery_worker.children(), what="the stuck process to be killed")
    assert vm_lock(vmid) == ("", "")
    again = runner.submit("testecho", "", "root@pam", "test.echo", lines=["still here"])
    assert wait_stopped(root, again)["exitstatus"] == "OK"


def test_stop_a_running_task_through_the_api(root, celery_worker, vms):
    vmid = vms[4]
    lock = LockSpec("vm", str(vmid), "migrate")
    upid = runner.submit("qmigrate", str(vmid), "root@pam", "test.sleep", lock=lock, seconds=60)
    wait_for(lambda: "sleeping 60 s" in log_lines(root, upid), what="the task to run")
    response = root.delete(f"{API}/nodes/{NODE}/tasks/{upid}")
    assert response.status_code == 200 and response.json() == {"data": None}
    assert status(root, upid)["exitstatus"] == "received interrupt"
    assert log_lines(root, upid)[-1] == "TASK ERROR: received interrupt"
    assert vm_lock(vmid) == ("", "")


def test_stop_a_queued_task_so_it_never_starts(root, celery_worker, tmp_path):
    runs = tmp_path / "runs"
    busy = [runner.submit("testsleep", "", "root@pam", "test.sleep", seconds=2) for _ in range(3)]
    queued = runner.submit("testsleep", "", "root@pam", "test.sleep", seconds=0.1, runs=str(runs))
    assert Task.objects.get(upid=queued).status == Task.QUEUED
    assert root.delete(f"{API}/nodes/{NODE}/tasks/{queued}").status_code == 200
    data = status(root, queued)
    assert data["status"] == "stopped" and data["exitstatus"] == "received interrupt"
    for upid in busy:
        wait_stopped(root, upid)
    line = wait_for(lambda: handled(celery_worker, queued), what="the worker to take the stopped task's message")
    assert not runs.exists(), line
    assert log_lines(root, queued) == ["TASK ERROR: received interrupt"]


def test_routing_a_task_to_another_nodes_queue(root, celery_worker, node_env, redis_broker, tmp_path):
    ghost = runner.submit("testnode", "", "root@pam", "test.node", node="ghostnode")
    other = CeleryWorker(node_env, "othernode", tmp_path / "other.log")
    other.start()
    try:
        upid = runner.submit("testnode", "", "root@pam", "test.node", node="othernode")
        assert parse_upid(upid).node == "othernode"
        task = wait_for(lambda: Task.objects.filter(upid=upid, status=Task.STOPPED).first(), what="othernode's task")
        assert task.node == "othernode" and task.worker == other.hostname and task.exitstatus == "OK"
        assert logs.read_lines(upid)[0] == f"running on othernode in process {task.pid}"
    finally:
        other.stop()
    # Nobody consumes node.ghostnode: testnode's worker left the message alone.
    assert ghost in reconcile.pending_task_ids("node.ghostnode")
    assert not Task.objects.filter(upid=ghost).exists()
    redis_broker.client().delete("node.ghostnode")


def test_run_inline_still_works(root):
    upid = index.run_inline("testinline", "", "root@pam", lambda task: task.log("inline work"))
    data = status(root, upid)
    assert data["status"] == "stopped" and data["exitstatus"] == "OK"
    assert log_lines(root, upid) == ["inline work", "TASK OK"]
    assert Task.objects.get(upid=upid).pid == os.getpid()


def test_an_api_task_answers_before_it_ends_and_goes_on(root):
    """``background_after``: the UPID comes back while the work still runs (in a thread of this
    process, the task running in it), and the task ends on its own afterwards."""
    import threading

    release = threading.Event()

    def work(task):  # type: ignore[no-untyped-def]
        task.log("started")
        assert release.wait(30)
        task.log("released")

    upid = index.run_inline("testbackground", "", "root@pam", work, background_after=0.2)
    running = status(root, upid)
    assert running["status"] == "running" and Task.objects.get(upid=upid).pid == os.getpid()
    release.set()
    assert wait_stopped(root, upid, timeout=30)["exitstatus"] == "OK"
    assert log_lines(root, upid) == ["started", "released", "TASK OK"]
    failing = index.run_inline("testbackground", "", "root@pam", lambda task: 1 / 0, background_after=5)
    assert status(root, failing)["exitstatus"] == "division by zero"  # a quick one has ended when it answers


def test_redelivery_while_running_does_not_run_twice(root, celery_worker, tmp_path):
    """The worker's redelivery timeout is 2 s: the message comes back while the task still runs."""
    runs = tmp_path / "runs"
    upid = runner.submit("testsleep", "", "root@pam", "test.sleep", seconds=6, runs=str(runs))
    assert wait_stopped(root, upid, timeout=30)["exitstatus"] == "OK"
    assert "duplicate delivery: task running in process" in celery_worker.log_text()
    assert len(runs.read_text().splitlines()) == 1


def test_worker_killed_mid_task_leaves_no_stale_lock_and_never_runs_twice(
    root, celery_worker, vms, redis_broker, tmp_path
):
    vmid = vms[5]
    runs = tmp_path / "runs"
    lock = LockSpec("vm", str(vmid), "backup")
    upid = runner.submit("vzdump", str(vmid), "root@pam", "test.sleep", lock=lock, seconds=4, runs=str(runs))
    wait_for(lambda: vm_lock(vmid) == ("backup", upid) and runs.exists(), what="the lease and the work to start")
    celery_worker.kill9()
    assert status(root, upid)["status"] == "running"  # the row cannot know yet
    assert reconcile.reconcile()["ended"] >= 1
    data = status(root, upid)
    assert data["status"] == "stopped" and data["exitstatus"] == runner.WORKER_LOST
    assert vm_lock(vmid) == ("", "")
    assert log_lines(root, upid)[-1] == f"TASK ERROR: {runner.WORKER_LOST}"
    assert upid in reconcile.pending_task_ids(f"node.{NODE}")  # unacknowledged: it will come back
    celery_worker.start()
    wait_for(lambda: upid not in reconcile.pending_task_ids(f"node.{NODE}"), what="redelivery")
    assert len(runs.read_text().splitlines()) == 1
    assert log_lines(root, upid)[-1] == f"TASK ERROR: {runner.WORKER_LOST}"


def test_restarted_worker_ends_the_dead_task_by_itself(root, celery_worker, vms, tmp_path):
    vmid = vms[6]
    runs = tmp_path / "runs"
    lock = LockSpec("vm", str(vmid), "backup")
    upid = runner.submit("vzdump", str(vmid), "root@pam", "test.sleep", lock=lock, seconds=4, runs=str(runs))
    wait_for(lambda: vm_lock(vmid) == ("backup", upid) and runs.exists(), what="the lease and the work to start")
    celery_worker.kill9()
    celery_worker.start()  # its start-up reconcile, or the redelivered message, ends the task
    assert wait_stopped(root, upid, timeout=30)["exitstatus"] == runner.WORKER_LOST
    assert vm_lock(vmid) == ("", "")
    line = wait_for(lambda: handled(celery_worker, upid), what="the redelivered message to be taken and dropped")
    assert "duplicate delivery" in line, line
    assert len(runs.read_text().splitlines()) == 1
    assert status(root, upid)["exitstatus"] == runner.WORKER_LOST


def test_reconciler_releases_leases_of_dead_processes_and_lost_messages(vms, redis_broker):
    """Without a worker: an inline task whose process died, a lease without a task, a lost message."""
    vmid, orphan, foreign_vmid = vms[7], vms[8], vms[9]
    child = os.fork()
    if child == 0:
        time.sleep(0.5)
        os._exit(0)
    child_pstart = process_start_ticks(child)
    os.waitpid(child, 0)
    dead = index.create_task("testdead", str(vmid), "root@pam")
    Task.objects.filter(upid=dead.upid).update(
        pid=child, pstart=child_pstart, lock=LockSpec("vm", str(vmid), "backup").as_dict()
    )
    owners = {
        vmid: dead.upid,
        orphan: f"UPID:{NODE}:00000001:00000001:00000001:vzdump:{orphan}:root@pam:",
        foreign_vmid: f"UPID:elsewhere:00000001:00000001:00000001:vzdump:{foreign_vmid}:root@pam:",
    }
    for key, owner in owners.items():
        vm = VM.objects.get(vmid=key)
        vm.lock, vm.lock_owner = "backup", owner
        vm.save()
    queued = index.create_task("testlost", "", "root@pam", status=Task.QUEUED, operation="test.echo")
    Task.objects.filter(upid=queued.upid).update(starttime=int(time.time()) - 600)

    result = reconcile.reconcile()
    assert result["ended"] >= 2 and result["released"] >= 1
    assert Task.objects.get(upid=dead.upid).exitstatus == runner.WORKER_LOST
    assert logs.read_lines(dead.upid)[-1] == f"TASK ERROR: {runner.WORKER_LOST}"
    assert vm_lock(vmid) == ("", "") and vm_lock(orphan) == ("", "")
    assert vm_lock(foreign_vmid) == ("backup", owners[foreign_vmid])  # another node's task: not ours to judge
    lost = Task.objects.get(upid=queued.upid)
    assert lost.status == Task.STOPPED and lost.exitstatus == reconcile.MESSAGE_LOST
    vm = VM.objects.get(vmid=foreign_vmid)
    vm.lock, vm.lock_owner = "", ""
    vm.save()


def test_cluster_tasks_lists_this_nodes_recent_and_running_tasks(root, celery_worker):
    upid = runner.submit("testsleep", "", "root@pam", "test.sleep", seconds=1.5)
    wait_for(lambda: Task.objects.get(upid=upid).status == Task.RUNNING, what="the task to run")
    running = {item["upid"]: item for item in root.get(f"{API}/cluster/tasks").json()["data"]}
    assert upid in running and "status" not in running[upid] and running[upid]["node"] == NODE
    wait_stopped(root, upid)
    finished = {item["upid"]: item for item in root.get(f"{API}/cluster/tasks").json()["data"]}
    assert finished[upid]["status"] == "OK" and finished[upid]["endtime"] >= finished[upid]["starttime"]


def test_log_paging_and_download(root):
    upid = index.run_inline("testlog", "", "root@pam", lambda task: [task.log(f"line {n}") for n in range(300)])
    page = root.get(f"{API}/nodes/{NODE}/tasks/{upid}/log?start=10&limit=5").json()
    assert page["total"] == 301 and page["data"][0] == {"n": 11, "t": "line 10"} and len(page["data"]) == 5
    download = root.get(f"{API}/nodes/{NODE}/tasks/{upid}/log?download=1")
    assert download["Content-Encoding"] == "gzip" and download["Content-Disposition"].startswith(
        'attachment; filename="task-testnode-testlog-'
    )
    assert gzip.decompress(download.content).decode().splitlines()[-1] == "TASK OK"
    both = root.get(f"{API}/nodes/{NODE}/tasks/{upid}/log?download=1&start=0")
    assert both.status_code == 500
    assert Path(logs.log_path(upid)).stat().st_size > 1024


def test_list_filters_source_vmid_user_and_time(root):
    done = index.run_inline("testfilter", "7609", "filter-user@pve", lambda task: None)
    other = index.run_inline("testfilter", "7608", "root@pam", lambda task: None)
    active = index.TaskHandle("testfilter", "7609", "root@pam")
    base = f"{API}/nodes/{NODE}/tasks?typefilter=testfilter&limit=100"

    def upids(query: str) -> list[str]:
        answer = root.get(base + query)
        assert answer.status_code == 200, answer.content
        return [item["upid"] for item in answer.json()["data"]]

    assert set(upids("")) == {done, other}  # archive by default: finished tasks only
    assert upids("&source=active") == [active.upid]
    assert set(upids("&source=all")) == {done, other, active.upid}
    assert set(upids("&source=all&vmid=7609")) == {done, active.upid}
    assert upids("&userfilter=FILTER-user") == [done]  # a case-insensitive substring, as Proxmox
    started = parse_upid(done).starttime
    assert done in upids(f"&since={started}&until={started}") and not upids(f"&since={started + 3600}")
    running = root.get(base + "&source=active").json()["data"][0]
    assert running["status"] == "RUNNING" and "endtime" not in running
    unknown = root.get(base + "&color=blue")
    assert unknown.status_code == 400 and "color" in unknown.json()["errors"]
    active.finish()
