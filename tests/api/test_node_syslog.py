"""``/nodes/{node}/syslog`` and ``/journal`` over the node's own log (``portal.syslog``), and the log file itself.

The records here are written with the runner's own writer into the session node's log directory;
``tests/portal/test_runnode.py`` reads the lines a real ``runnode`` wrote.
"""

from __future__ import annotations

import os
import time

import pytest
from django.conf import settings
from django.test import Client

from portal import syslog
from tests.api_client import API, logged_in, revoke_grants, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "syslog-password"
USERS = ("sl-audit@pve", "sl-sys@pve", "sl-vms@pve")
NODE = "testnode"


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    users_with_grants(
        USERS,
        PASSWORD,
        [
            (f"/nodes/{NODE}", "PVEAuditor", ["sl-audit@pve"]),  # Sys.Audit, not Sys.Syslog
            (f"/nodes/{NODE}", "PVESysAdmin", ["sl-sys@pve"]),
            ("/vms", "PVEAdmin", ["sl-vms@pve"]),  # Sys.Syslog, on the wrong path
        ],
    )
    log_dir = settings.PVE_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in (syslog.FILENAME, f"{syslog.FILENAME}.1"):
        (log_dir / name).unlink(missing_ok=True)
    writer = syslog.Writer(log_dir)
    for i in range(1, 121):
        writer.write("worker" if i % 2 else "web", 4000 + i % 2, f"line {i}")
    writer.close()
    yield {"root": logged_in(), **{userid: logged_in(userid, PASSWORD) for userid in USERS}}
    revoke_grants(USERS)
    (log_dir / syslog.FILENAME).unlink(missing_ok=True)


def get(client: Client, what: str, **params: object) -> dict:
    response = client.get(f"{API}/nodes/{NODE}/{what}", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("what", ["syslog", "journal"])
def test_only_sys_syslog_on_the_node_reads_it(clients, what):
    assert Client().get(f"{API}/nodes/{NODE}/{what}").status_code == 401
    for userid in ("sl-audit@pve", "sl-vms@pve"):
        response = clients[userid].get(f"{API}/nodes/{NODE}/{what}")
        assert response.status_code == 403, (userid, response.content)
    assert get(clients["sl-sys@pve"], what)["data"]
    assert get(clients["root"], what)["data"]


def test_syslog_pages_with_start_and_limit(clients):
    first = get(clients["root"], "syslog")
    assert first["total"] == 120 and [line["n"] for line in first["data"]] == list(range(1, 51))
    assert first["data"][0]["t"].endswith(f" {NODE} worker[4001]: line 1")
    page = get(clients["root"], "syslog", start=100, limit=30)
    assert [line["n"] for line in page["data"]] == list(range(101, 121))
    assert page["data"][-1]["t"].endswith("web[4000]: line 120")
    only_web = get(clients["root"], "syslog", service="web", limit=500)
    assert only_web["total"] == 60 and all(" web[4000]: " in line["t"] for line in only_web["data"])


def test_syslog_since_until_and_no_content(clients):
    today = time.strftime("%Y-%m-%d")
    assert get(clients["root"], "syslog", since=today, until=today)["total"] == 120
    assert get(clients["root"], "syslog", until="2000-01-01")["data"] == [{"n": 1, "t": "no content"}]
    assert get(clients["root"], "syslog", service="nosuch") == {"data": [{"n": 1, "t": "no content"}], "total": 1}
    future = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 120))
    assert get(clients["root"], "syslog", since=future)["total"] == 1  # the "no content" line


@pytest.mark.parametrize(
    ("what", "params", "field"),
    [
        ("syslog", {"since": "yesterday"}, "since"),
        ("syslog", {"until": "2026-13-45"}, "until"),
        ("syslog", {"limit": "-1"}, "limit"),
        ("syslog", {"lines": "5"}, "lines"),
        ("journal", {"since": "2026-01-01"}, "since"),
        ("journal", {"startcursor": "s=1;rm -rf /"}, "startcursor"),
        ("journal", {"lastentries": "x"}, "lastentries"),
    ],
)
def test_bad_parameters_are_400_with_the_field(clients, what, params, field):
    response = clients["root"].get(f"{API}/nodes/{NODE}/{what}", params)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_journal_lines_between_cursors_for_polling_and_paging(clients):
    lines = get(clients["root"], "journal", lastentries=10)["data"]
    assert len(lines) == 12 and lines[0].startswith("s=") and lines[-1].startswith("s=")
    assert lines[1].endswith("line 111") and lines[-2].endswith("line 120")
    assert len(get(clients["root"], "journal")["data"]) == 52  # the last 50 by default
    start, end = lines[0], lines[-1]
    # Polling from the end cursor: nothing new, the cursor comes back; then a new line.
    assert get(clients["root"], "journal", startcursor=end)["data"] == [end, end]
    writer = syslog.Writer(settings.PVE_LOG_DIR)
    writer.write("replicator", 77, "a new line")
    writer.close()
    new = get(clients["root"], "journal", startcursor=end)["data"]
    assert new[1:-1] == [new[1]] and new[1].endswith("replicator[77]: a new line")
    assert int(new[0][2:]) == int(end[2:]) + 1  # the cursor keeps rising across writers
    # Paging back from the start cursor.
    older = get(clients["root"], "journal", endcursor=start, lastentries=5)["data"]
    assert [line.rsplit(" ", 1)[1] for line in older[1:-1]] == ["106", "107", "108", "109", "110"]
    epoch = int(time.time())
    assert get(clients["root"], "journal", since=epoch + 60)["data"] == ["", ""]


def test_the_log_file_is_private_rotates_and_survives_a_torn_line(tmp_path):
    writer = syslog.Writer(tmp_path, max_bytes=2000)
    for i in range(100):
        writer.write("worker", 1, f"tab\there\nand newline {i}")
    writer.close()
    assert (tmp_path / syslog.FILENAME).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / f"{syslog.FILENAME}.1").exists()
    assert (tmp_path / syslog.FILENAME).stat().st_size < 2000
    with open(tmp_path / syslog.FILENAME, "ab") as stream:
        stream.write(b"17\t12")  # a crash in the middle of a record
    records = list(syslog.records(tmp_path))
    assert records[-1].text == "tab here and newline 99"
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert records[-1].seq == 100 and len(records) < 100  # the older generation is gone
    os.chmod(tmp_path / syslog.FILENAME, 0o644)
    writer = syslog.Writer(tmp_path)
    writer.write("web", 2, "after the crash")
    writer.close()
    assert list(syslog.records(tmp_path))[-1] == syslog.Record(
        101, pytest.approx(time.time(), abs=60), "web", 2, "after the crash"
    )
    assert (tmp_path / syslog.FILENAME).stat().st_mode & 0o777 == 0o600
