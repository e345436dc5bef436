"""A live migration's requests to its target node: start the incoming QEMU, resume it, stop it.

qemu-server runs ``qm start --migratedfrom``, ``qm resume --nocheck`` and ``qm stop --migratedfrom``
on the target over SSH, each a new process; here each is a task of the target's own worker,
asked through its API (``POST .../status/start`` with the root@pam-only migration parameters,
as :class:`cluster.membership.routing.NodeAPI`), so no interpreter starts on the migration's
critical path. The SSH command stays the way when that API cannot be reached at all (nothing
was sent then, so nothing runs twice). Either way the answer is a :class:`remote.Result`: the
task's log as the command's output, its exit status as the return code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cluster.membership.routing import NodeAPI, NodeAPIError, RemoteTaskSource
from portal.tasks.exceptions import TaskError
from vms.services.migration import remote

Log = Callable[[str], None]
TASK_WAIT = 720.0  # seconds: the target's start task is limited to 660 s
FIRST_POLL, LAST_POLL = 0.01, 0.2  # seconds between two looks at the task, growing
UNKNOWN = -1  # the return code when the task's end could not be seen (it may have done its work)


class Target:
    """The target node of one migration: its API when reachable, else ``qm`` over ``shell``."""

    def __init__(self, node: str, shell: remote.NodeShell, log: Log) -> None:
        self.node = node
        self.shell = shell
        self.log = log
        self._api: NodeAPI | None = None
        self._unreachable = False

    def start(self, vmid: int, values: dict[str, Any]) -> remote.Result:
        return self._run("start", vmid, values)

    def resume(self, vmid: int) -> remote.Result:
        return self._run("resume", vmid, {"nocheck": 1})

    def stop(self, vmid: int, source: str) -> remote.Result:
        return self._run("stop", vmid, {"migratedfrom": source})

    def _run(self, verb: str, vmid: int, values: dict[str, Any]) -> remote.Result:
        api = self._connect()
        if api is not None:
            try:
                upid = api.request("POST", f"/nodes/{self.node}/qemu/{vmid}/status/{verb}", values)
            except NodeAPIError as exc:
                if not exc.unreachable:
                    return remote.Result(1, "", exc.message)
                self._fall_back(exc)
            else:
                return self._wait(api, str(upid))
        argv = ["qm", verb, str(vmid)]
        for name, value in values.items():
            if value not in (None, ""):
                argv += [f"--{name}", str(value)]
        return self.shell.run(remote.manage_argv(*argv))

    def _connect(self) -> NodeAPI | None:
        if self._api is None and not self._unreachable:
            try:
                self._api = NodeAPI(self.node)
            except NodeAPIError as exc:
                self._fall_back(exc)
        return self._api

    def _fall_back(self, exc: NodeAPIError) -> None:
        if not self._unreachable:
            self.log(f"WARN: the API of node '{self.node}' cannot be reached ({exc.message}): using node SSH")
        self._unreachable = True
        self._api = None

    def _wait(self, api: NodeAPI, upid: str) -> remote.Result:
        """The target's task followed to its end: its log and exit status."""
        task = RemoteTaskSource(self.node, upid, api)
        deadline, pause = time.monotonic() + TASK_WAIT, FIRST_POLL
        try:
            while not (state := task.state())[0]:
                if time.monotonic() > deadline:
                    return remote.Result(UNKNOWN, "", f"task {upid} on node '{self.node}' did not end in time")
                time.sleep(pause)
                pause = min(LAST_POLL, pause * 1.5)
            lines = task.lines(0)
        except TaskError as exc:
            return remote.Result(UNKNOWN, "", f"task {upid} on node '{self.node}': {exc}")
        status = state[1]
        good = status == "OK" or status.startswith("WARNINGS")
        return remote.Result(0 if good else 1, "\n".join(lines), "" if good else status)
