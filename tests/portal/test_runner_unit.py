"""The node runner's pieces without a node: supervision with tiny real children, and the TLS policy."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portal.runner.lifetime import NodeLocked, lock_node
from portal.runner.supervisor import ChildSpec, GiveUp, Supervisor, default_backoff
from portal.runner.web import build_config, server_ssl_context

REPO = Path(__file__).resolve().parent.parent.parent
SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]
CRASHER = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]


def _no_wait(_restarts: int) -> float:
    return 0.0


def _graceful(name: str, record: Path, ready: Path) -> list[str]:
    """A child that notes its name in ``record`` when it gets SIGTERM, after saying it is ready."""
    code = textwrap.dedent(
        f"""
        import signal, sys, time
        def bye(*_):
            with open({str(record)!r}, "a") as f:
                f.write({name!r} + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        open({str(ready)!r}, "w").close()
        while True:
            time.sleep(1)
        """
    )
    return [sys.executable, "-c", code]


def _run_in_thread(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run(poll=0.05)), daemon=True)
    thread.start()
    return thread, result


def test_a_dead_child_is_restarted_and_the_others_are_left_alone(tmp_path):
    marker = tmp_path / "starts"
    flaky = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(0.2)"]
    supervisor = Supervisor(
        [ChildSpec("flaky", flaky), ChildSpec("steady", SLEEPER)], tmp_path, max_restarts=5, window=60
    )
    supervisor.start()
    try:
        steady_pid = supervisor.children[1].process.pid
        deadline = time.monotonic() + 15

        def starts() -> int:
            return len(marker.read_text()) if marker.exists() else 0

        while starts() < 3 and time.monotonic() < deadline:
            supervisor.watch_once()
            time.sleep(0.05)
        assert starts() >= 3
        assert supervisor.children[1].process.pid == steady_pid
        assert len(supervisor.children[0].restarts) >= 2
    finally:
        supervisor.stop()
    assert not supervisor.children[1].alive()


def test_backoff_grows_and_is_capped():
    delays = [default_backoff(n) for n in range(8)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 10.0


def test_restarts_wait_for_the_backoff(tmp_path):
    supervisor = Supervisor([ChildSpec("crasher", CRASHER)], tmp_path, backoff=lambda n: 0.3)
    supervisor.start()
    supervisor.children[0].process.wait()
    started = time.monotonic()
    supervisor.watch_once()
    assert time.monotonic() - started >= 0.3
    supervisor.stop()


def test_gives_up_after_max_restarts_naming_the_child_and_its_last_lines(tmp_path, caplog):
    supervisor = Supervisor(
        [ChildSpec("steady", SLEEPER), ChildSpec("crasher", CRASHER)],
        tmp_path,
        max_restarts=5,
        window=60,
        backoff=_no_wait,
    )
    thread, result = _run_in_thread(supervisor)
    thread.join(timeout=30)
    assert result == [1]
    assert len(supervisor.children[1].restarts) == 5
    assert not supervisor.children[0].alive()  # everything else was stopped
    assert "boom: bad config" in (tmp_path / "crasher.log").read_text()
    message = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "crasher died 6 times within 60 s" in message
    assert "boom: bad config" in message and "exit code 3" in message


def test_restarts_outside_the_window_do_not_count(tmp_path):
    supervisor = Supervisor([ChildSpec("crasher", CRASHER)], tmp_path, max_restarts=2, window=0.5, backoff=_no_wait)
    supervisor.start()
    counted = []
    try:
        for _ in range(6):  # far more than max_restarts, but spread beyond the window
            supervisor.children[0].process.wait()
            time.sleep(0.3)
            supervisor.watch_once()  # raises GiveUp if the old restarts still counted
            counted.append(len(supervisor.children[0].restarts))
        supervisor.children[0].process.wait(timeout=10)  # the last one has had its say too
    finally:
        supervisor.stop()  # joins the thread that copies the child's output to its log
    assert (tmp_path / "crasher.log").read_text().count("boom: bad config") == 7  # started, then restarted 6 times
    assert max(counted) <= 2 and counted[-1] >= 1


def test_gives_up_when_restarts_come_too_fast(tmp_path):
    supervisor = Supervisor([ChildSpec("crasher", CRASHER)], tmp_path, max_restarts=2, window=60, backoff=_no_wait)
    supervisor.start()
    try:
        with pytest.raises(GiveUp, match="crasher died 3 times"):
            for _ in range(5):
                supervisor.children[0].process.wait()
                supervisor.watch_once()
    finally:
        supervisor.stop()


def test_child_that_never_gets_ready_is_reported_with_what_was_awaited(tmp_path):
    supervisor = Supervisor(
        [ChildSpec("lazy", SLEEPER, ready=lambda: False, ready_timeout=0.5, waiting_for="the lazy socket")],
        tmp_path,
    )
    with pytest.raises(GiveUp, match=r"lazy not ready after 0 s \(waited for the lazy socket\)"):
        supervisor.start()
    supervisor.stop()
    assert not supervisor.children[0].alive()


def test_child_that_exits_before_ready_is_reported(tmp_path):
    supervisor = Supervisor([ChildSpec("early", CRASHER, ready=lambda: False, ready_timeout=30)], tmp_path)
    with pytest.raises(GiveUp, match="early exited before it was ready") as excinfo:
        supervisor.start()
    assert "boom: bad config" in str(excinfo.value)
    supervisor.stop()


def test_later_children_wait_for_the_earlier_ones_to_be_ready(tmp_path):
    flag = tmp_path / "first-ready"
    first = [sys.executable, "-c", f"import time; time.sleep(0.5); open({str(flag)!r}, 'w'); time.sleep(30)"]
    second = [sys.executable, "-c", f"import os, sys, time; sys.exit(0 if os.path.exists({str(flag)!r}) else 7)"]
    supervisor = Supervisor([ChildSpec("first", first, ready=flag.exists), ChildSpec("second", second)], tmp_path)
    supervisor.start()
    try:
        assert supervisor.children[1].process.wait(timeout=10) == 0
    finally:
        supervisor.stop()


def test_stop_is_in_reverse_start_order_with_sigterm(tmp_path):
    record = tmp_path / "stopped"
    names = ["redis", "replicator", "worker", "beat", "web"]
    specs = []
    for name in names:
        ready = tmp_path / f"{name}.ready"
        specs.append(ChildSpec(name, _graceful(name, record, ready), ready=ready.exists))
    supervisor = Supervisor(specs, tmp_path)
    thread, result = _run_in_thread(supervisor)
    deadline = time.monotonic() + 20
    while not all((tmp_path / f"{n}.ready").exists() for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stopping.set()  # what the SIGTERM handler does
    thread.join(timeout=30)
    assert result == [0]
    assert record.read_text().split() == ["web", "beat", "worker", "replicator", "redis"]
    assert all(c.exit_code() == 0 for c in supervisor.children)


def test_a_child_ignoring_sigterm_is_killed(tmp_path):
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)",
    ]
    log = tmp_path / "stubborn.log"
    ready = ChildSpec("stubborn", stubborn, ready=lambda: log.exists() and "up" in log.read_text())
    supervisor = Supervisor([ready], tmp_path, stop_timeout=0.5)
    supervisor.start()  # returns once it said "up": SIGTERM is ignored from then on
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    assert supervisor.children[0].exit_code() == -signal.SIGKILL


def test_output_is_teed_to_the_log_file_and_prefixed_on_stderr(tmp_path, capfd):
    talker = [sys.executable, "-c", "import sys; print('hello out'); print('hello err', file=sys.stderr)"]
    supervisor = Supervisor([ChildSpec("talker", talker)], tmp_path)
    supervisor.start()
    supervisor.children[0].process.wait()
    supervisor.stop()  # joins the tee thread
    logged = (tmp_path / "talker.log").read_text()
    assert "hello out" in logged and "hello err" in logged
    err = capfd.readouterr().err
    assert "[talker] hello out" in err and "[talker] hello err" in err


def test_sigterm_to_the_runner_stops_everything_and_exits_zero(tmp_path):
    """A real runner process: signal handling lives in the main thread."""
    pidfile = tmp_path / "child.pid"
    child = [
        sys.executable,
        "-c",
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    ]
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from portal.runner.supervisor import ChildSpec, Supervisor
        spec = ChildSpec("sleeper", {child!r}, ready=Path({str(pidfile)!r}).exists)
        sys.exit(Supervisor([spec], Path({str(tmp_path)!r})).run(poll=0.05))
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int(pidfile.read_text())
        time.sleep(0.2)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=20) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
    assert not Path(f"/proc/{child_pid}").exists()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_children_die_with_a_killed_runner_and_the_data_directory_stays_locked_while_any_process_lives(tmp_path):
    """SIGKILL to a real runner: its children get their parent-death signal; a process they left
    behind (here a daemonised grandchild, which has no such signal) keeps the node lock, so a
    second runner is refused until it is gone."""
    pids = tmp_path / "pids"
    pids.mkdir()
    sleeper = f"import os, time; open({str(pids)!r} + '/sleeper', 'w').write(str(os.getpid())); time.sleep(60)"
    spawner = textwrap.dedent(
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pids)!r} + "/grandchild", "w").write(str(os.getpid()))
                time.sleep(60)
            os._exit(0)
        open({str(pids)!r} + "/spawner", "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from portal.runner.lifetime import lock_node
        from portal.runner.supervisor import ChildSpec, Supervisor
        lock = lock_node(Path({str(tmp_path)!r}))
        specs = [
            ChildSpec("sleeper", [sys.executable, "-c", {sleeper!r}], ready=Path({str(pids)!r}, "sleeper").exists),
            ChildSpec("spawner", [sys.executable, "-c", {spawner!r}], ready=Path({str(pids)!r}, "grandchild").exists),
        ]
        sys.exit(Supervisor(specs, Path({str(tmp_path)!r}), inherit_fds=(lock,)).run(poll=0.05))
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    names = ("sleeper", "spawner", "grandchild")
    grandchild = None
    try:
        deadline = time.monotonic() + 30
        while not all((pids / name).exists() and (pids / name).read_text() for name in names):
            assert time.monotonic() < deadline and runner.poll() is None, "the children did not start"
            time.sleep(0.05)
        sleeper_pid, spawner_pid, grandchild = (int((pids / name).read_text()) for name in names)
        with pytest.raises(NodeLocked, match=r"in use by another runnode.*\(python"):
            lock_node(tmp_path, wait=0.2)  # the runner itself holds it
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(sleeper_pid) or _alive(spawner_pid):
            assert time.monotonic() < deadline, "children outlived their runner"
            time.sleep(0.02)
        assert _alive(grandchild)
        with pytest.raises(NodeLocked, match=rf"{grandchild} \(python"):
            lock_node(tmp_path, wait=0.2)
        os.kill(grandchild, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(grandchild):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.close(lock_node(tmp_path, wait=5))  # free once the last process of the first runner is gone
    finally:
        if runner.poll() is None:
            runner.kill()
        if grandchild is not None and _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_sigterm_while_waiting_for_readiness_is_a_clean_stop(tmp_path):
    supervisor = Supervisor([ChildSpec("slow", SLEEPER, ready=lambda: False, ready_timeout=60)], tmp_path)
    thread, result = _run_in_thread(supervisor)
    time.sleep(0.5)
    supervisor.stopping.set()
    thread.join(timeout=20)
    assert result == [0]
    assert not supervisor.children[0].alive()


# --- TLS policy of the web process -----------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certfile, keyfile


def _handshake(server_context: ssl.SSLContext, version: ssl.TLSVersion) -> tuple[str | None, object]:
    """Handshake over a real loopback TCP socket with a client pinned to ``version``."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer old protocols at all
    client_context.minimum_version = version
    client_context.maximum_version = version
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    outcome: list[object] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                outcome.append(tls.version())
        except (ssl.SSLError, OSError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    negotiated = None
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw) as tls,
        ):
            negotiated = tls.version()
    except (ssl.SSLError, OSError):
        pass
    thread.join(timeout=10)
    listener.close()
    return negotiated, outcome[0] if outcome else None


old_tls_versions_ok = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


@old_tls_versions_ok
@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (ssl.TLSVersion.TLSv1, None),
        (ssl.TLSVersion.TLSv1_1, None),
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ],
    ids=["tls1.0", "tls1.1", "tls1.2", "tls1.3"],
)
def test_web_tls_policy_over_loopback(tmp_path, version, expected):
    negotiated, server_side = _handshake(server_ssl_context(*_self_signed(tmp_path)), version)
    assert negotiated == expected
    if expected is None:
        assert isinstance(server_side, ssl.SSLError)  # the server refused the handshake
    else:
        assert server_side == expected


@old_tls_versions_ok
def test_the_tls11_client_really_offers_tls11(tmp_path):
    """Control: a permissive server does accept the TLS 1.1 client, so the refusal above is the policy."""
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(*_self_signed(tmp_path))
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.minimum_version = ssl.TLSVersion.TLSv1
    assert _handshake(permissive, ssl.TLSVersion.TLSv1_1)[0] == "TLSv1.1"


@old_tls_versions_ok
def test_uvicorn_config_of_the_web_process_uses_the_hardened_context(tmp_path):
    certfile, keyfile = _self_signed(tmp_path)
    config = build_config("127.0.0.1", 0, certfile, keyfile)
    assert config.ssl is not None
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert _handshake(config.ssl, ssl.TLSVersion.TLSv1_1)[0] is None
    assert _handshake(config.ssl, ssl.TLSVersion.TLSv1_3)[0] == "TLSv1.3"


def test_a_child_asking_to_be_restarted_is_started_again_at_once_and_not_counted(tmp_path):
    restarter = [sys.executable, "-c", "import sys; sys.exit(75)"]
    supervisor = Supervisor([ChildSpec("replicator", restarter)], tmp_path, max_restarts=1, backoff=lambda n: 30)
    supervisor.start()
    try:
        for _ in range(5):  # would give up after one counted restart, or wait 30 s of backoff
            supervisor.children[0].process.wait(timeout=10)
            started = time.monotonic()
            supervisor.watch_once()
            assert time.monotonic() - started < 5
        assert not supervisor.children[0].restarts
    finally:
        supervisor.stop()
