"""The source's requests to a migration target (:mod:`vms.services.migration.target`) against a
scripted API and shell: the target's task followed to its end (log as output, exit status as
return code), SSH only when the API cannot be reached (nothing sent), never after a refusal.
The real API path runs in the online-migration lab tests and tests/api/test_power_matrix.py."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.membership.routing import NodeAPIError
from vms.services.migration import remote, target

UPID = "UPID:far:00001234:00005678:6751F000:qmstart:100:root@pam:"


class Api:
    """Answers POSTs with a UPID (or raises ``refuse``), then the task's states in turn and its log."""

    def __init__(self, *states: Any, refuse: NodeAPIError | None = None, log: tuple[str, ...] = ()) -> None:
        self.states = list(states)
        self.refuse = refuse
        self.log = log
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, values: dict[str, Any] | None = None) -> Any:
        self.requests.append((method, path, values))
        if method == "POST":
            if self.refuse is not None:
                raise self.refuse
            return UPID
        if path.endswith("/status"):
            state = self.states.pop(0)
            if isinstance(state, Exception):
                raise state
            return state
        return [{"n": i + 1, "t": line} for i, line in enumerate(self.log)]


class Shell:
    node = "far"

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    def run(self, argv: list[str], *, stdin: Any = ()) -> remote.Result:
        self.ran.append(argv)
        return remote.Result(0, "migration listens on unix:/run/x", "")

    def close(self) -> None:
        pass


@pytest.fixture
def api(monkeypatch):
    made: list[Any] = []

    def install(fake: Any) -> list[Any]:
        def construct(node: str) -> Any:
            if isinstance(fake, Exception):
                raise fake
            made.append(node)
            return fake

        monkeypatch.setattr(target, "NodeAPI", construct)
        monkeypatch.setattr(target, "FIRST_POLL", 0.001)
        return made

    return install


RUNNING = {"status": "running"}


def test_the_targets_task_is_followed_to_its_end_and_its_log_is_the_output(api):
    fake = Api(
        RUNNING, RUNNING, {"status": "stopped", "exitstatus": "OK"}, log=("migration listens on tcp:1:2", "TASK OK")
    )
    api(fake)
    shell, lines = Shell(), []
    result = target.Target("far", shell, lines.append).start(100, {"migratedfrom": "near", "stateuri": "tcp"})
    assert (result.returncode, result.stdout) == (0, "migration listens on tcp:1:2\nTASK OK")
    assert fake.requests[0] == ("POST", "/nodes/far/qemu/100/status/start", {"migratedfrom": "near", "stateuri": "tcp"})
    assert [r[1].rsplit("/", 1)[1] for r in fake.requests[1:]] == ["status", "status", "status", "log?start=0&limit=0"]
    assert shell.ran == [] and lines == []


@pytest.mark.parametrize(("exitstatus", "code"), [("ERROR: VM 100 already running", 1), ("WARNINGS: 2", 0)])
def test_the_tasks_exit_status_is_the_return_code(api, exitstatus, code):
    api(Api({"status": "stopped", "exitstatus": exitstatus}, log=("x",)))
    result = target.Target("far", Shell(), print).resume(100)
    assert result.returncode == code and (result.stderr == exitstatus) == (code == 1)


def test_a_task_whose_end_cannot_be_seen_is_unknown_not_failed(api):
    from portal.tasks.exceptions import TaskError

    api(Api(RUNNING, TaskError("597 no complete answer")))
    result = target.Target("far", Shell(), print).start(100, {"migratedfrom": "near"})
    assert result.returncode == target.UNKNOWN and "597" in result.stderr


def test_an_unreachable_api_means_qm_over_ssh_with_the_same_parameters(api):
    api(NodeAPIError(595, "Connection refused"))
    shell, lines = Shell(), []
    far = target.Target("far", shell, lines.append)
    values = {"migratedfrom": "near", "machine": "pc-i440fx-7.2", "migration_network": None, "nbd-disks": ""}
    assert far.start(100, values).returncode == 0
    assert far.resume(100).returncode == 0
    assert shell.ran == [
        remote.manage_argv("qm", "start", "100", "--migratedfrom", "near", "--machine", "pc-i440fx-7.2"),
        remote.manage_argv("qm", "resume", "100", "--nocheck", "1"),
    ]
    assert len(lines) == 1 and lines[0].startswith("WARN: the API of node 'far' cannot be reached (Connection refused)")


def test_a_post_that_could_not_connect_falls_back_one_that_was_refused_does_not(api):
    api(Api(refuse=NodeAPIError(596, "TLS connection to node 'far' failed")))
    shell = Shell()
    assert target.Target("far", shell, print).stop(100, "near").returncode == 0
    assert shell.ran == [remote.manage_argv("qm", "stop", "100", "--migratedfrom", "near")]

    api(Api(refuse=NodeAPIError(500, "Internal Server Error: VM 100 is not on node 'near'")))
    shell = Shell()
    result = target.Target("far", shell, print).stop(100, "near")
    assert result.returncode == 1 and "is not on node 'near'" in result.output()
    assert shell.ran == [], "a refused request must not be sent again another way"
