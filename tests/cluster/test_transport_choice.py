"""The replicator's transport choice fails closed, and its reasons for being read-only (pure logic).

The end-to-end proof with a real corosync and node runner is ``test_read_only_member``.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from replicator import membership


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Corosync files of this test only; the cluster probe answers what the test says."""
    conf, authkey = tmp_path / "corosync.conf", tmp_path / "authkey"
    answer: dict[str, str | None] = {"cluster": None}
    monkeypatch.setattr(membership, "_cluster_probe", lambda: answer["cluster"])
    with override_settings(PVE_TRANSPORT="auto", PVE_COROSYNC_CONF=conf, PVE_COROSYNC_AUTHKEY=authkey):
        yield conf, authkey, answer


def test_a_member_by_its_database_stays_on_corosync_without_its_files(files):
    _conf, _authkey, answer = files
    answer["cluster"] = "c1"
    assert membership.transport_kind() == "corosync"
    reasons = membership.not_ready_reasons({"transport": "corosync", "connected": False, "error": "x"}, synced=False)
    assert [r.split(" at ")[0] for r in reasons[:2]] == ["no corosync authkey", "no corosync configuration"]
    assert reasons[2] == "corosync is not running or not reachable (x)"


def test_a_joining_node_by_its_files_and_a_node_that_never_joined(files):
    conf, authkey, _answer = files
    assert membership.transport_kind() == "local"
    conf.write_text("nodelist {\n  node {\n    name: testnode\n  }\n}\n")
    assert membership.transport_kind() == "local"  # a corosync.conf without the authkey: not a member
    authkey.write_bytes(b"k")
    assert membership.transport_kind() == "corosync"
    conf.write_text("nodelist {\n  node {\n    name: othernode\n  }\n}\n")
    assert membership.transport_kind() == "local"


@pytest.mark.parametrize(
    ("facts", "synced", "reason"),
    [
        ({"connected": True, "corosync_quorate": False, "members": [1]}, True, "no quorum: "),
        ({"connected": True, "corosync_quorate": True, "stalled": True}, True, "corosync does not deliver"),
        ({"connected": True, "corosync_quorate": True, "quorate": False}, True, "joining the replicator group"),
        ({"connected": True, "corosync_quorate": True, "quorate": True}, False, "synchronising the state"),
    ],
)
def test_reasons_of_a_connected_member_name_no_files(files, facts, synced, reason):
    reasons = membership.not_ready_reasons({"transport": "corosync", **facts}, synced=synced)
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_a_member_whose_group_lacks_votes_says_how_many_it_holds(files):
    votes = {"expected": 3, "quorum": 2, "needed": 2, "held": 1, "members": {"3": 1, "4": 0}}
    facts = {"transport": "corosync", "connected": True, "corosync_quorate": True, "quorate": False, "member": True}
    reasons = membership.not_ready_reasons({**facts, "votes": votes}, synced=True)
    assert reasons == [
        "the members running a replicator hold 1 of the 2 votes that must confirm a write (votes by node id: 3: 1, 4: 0)"
    ]
    unknown = membership.not_ready_reasons({**facts, "votes": None}, synced=True)
    assert unknown == ["the votes of the members are not known yet (votequorum did not answer)"]


def test_a_writable_member_and_a_standalone_node_have_no_reasons(files):
    facts = {"transport": "corosync", "connected": True, "corosync_quorate": True, "quorate": True}
    assert membership.not_ready_reasons(facts, synced=True) == []
    assert membership.not_ready_reasons({"transport": "LocalTransport", "quorate": True}, synced=True) == []
