"""The acknowledgement rule in votes (pure logic): who must have applied a write before it is answered.

The end-to-end proof on a real corosync cluster with a node that holds no vote is
``tests/cluster/test_replication_votes.py``.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from replicator.acks import AckTracker, VoteView, designated, needed_votes, view_from
from replicator.corosync.quorum import (
    VOTEQUORUM_INFO_QDEVICE_ALIVE,
    VOTEQUORUM_INFO_QDEVICE_CAST_VOTE,
    VOTEQUORUM_INFO_QDEVICE_REGISTERED,
    VOTEQUORUM_INFO_QUORATE,
    QuorumInfo,
)
from replicator.sync import Coordinator
from replicator.transport import Transport

DEVICE_VOTING = VOTEQUORUM_INFO_QDEVICE_REGISTERED | VOTEQUORUM_INFO_QDEVICE_ALIVE | VOTEQUORUM_INFO_QDEVICE_CAST_VOTE


def info(
    *, expected: int, total: int, quorum: int, quorate: bool = True, device: int = 0, cast: bool = False
) -> QuorumInfo:
    """The local node's votequorum info as ``votequorum_getinfo`` reports it."""
    flags = (VOTEQUORUM_INFO_QUORATE if quorate else 0) | (DEVICE_VOTING if cast else 0)
    return QuorumInfo(
        node_id=1,
        node_state=1,
        node_votes=1,
        expected_votes=expected,
        highest_expected=expected,
        total_votes=total,
        quorum=quorum,
        quorate=quorate,
        two_node=False,
        wait_for_all=False,
        flags=flags,
        qdevice_votes=device,
    )


def safe(view: VoteView, votes: dict[int, int], applied: set[int], device: int = 0) -> bool:
    """The definition: no set of nodes outside ``applied`` (with the device) reaches the quorum.

    ``votes``: every node of the cluster, present or not. Checked by brute force over all
    partitions, with the quorum a majority of every vote that exists.
    """
    others = [n for n in votes if n not in applied]
    quorum = (sum(votes.values()) + device) // 2 + 1
    for size in range(len(others) + 1):
        for partition in itertools.combinations(others, size):
            if sum(votes[n] for n in partition) + device >= quorum:
                return False
    return True


def confirmed(view: VoteView, applied: set[int]) -> bool:
    tracker = AckTracker()
    for nodeid in applied:
        tracker.ack(nodeid, 7, "h")
    return tracker.votes(7, "h", view) >= view.needed


# --- the rule ----------------------------------------------------------------------------


def test_a_joining_node_without_votes_never_makes_up_the_needed_votes():
    """Three voting nodes and a joiner (0 votes): the origin and the joiner are not enough; two voters are."""
    votes = {1: 1, 2: 1, 3: 1, 4: 0}
    view = view_from(info(expected=3, total=3, quorum=2), votes, configured=3)
    assert view.needed == 2
    assert not confirmed(view, {1, 4}) and not safe(view, votes, {1, 4})
    assert confirmed(view, {1, 2}) and safe(view, votes, {1, 2})
    assert confirmed(view, {2, 3, 4})
    assert not confirmed(view, {4})


def test_a_node_with_two_votes_confirms_alone_and_one_vote_does_not():
    votes = {1: 2, 2: 1, 3: 1}
    view = view_from(info(expected=4, total=4, quorum=3), votes, configured=4)
    assert view.needed == 2
    assert confirmed(view, {1}) and safe(view, votes, {1})
    assert not confirmed(view, {2}) and not safe(view, votes, {2})
    assert confirmed(view, {2, 3}) and safe(view, votes, {2, 3})


@pytest.mark.parametrize("size", range(1, 8))
def test_every_confirmed_set_is_safe_for_one_vote_per_node(size):
    votes = {n: 1 for n in range(1, size + 1)}
    view = view_from(info(expected=size, total=size, quorum=size // 2 + 1), votes, configured=size)
    for count in range(size + 1):
        for applied in itertools.combinations(votes, count):
            if confirmed(view, set(applied)):
                assert safe(view, votes, set(applied)), (size, applied)
    # and the rule is not stricter than it must be: the smallest safe sets confirm
    smallest = min(
        len(a) for c in range(size + 1) for a in itertools.combinations(votes, c) if safe(view, votes, set(a))
    )
    assert view.needed == smallest


def test_a_qdevice_never_acknowledges_but_a_lone_node_with_its_vote_writes():
    """Two nodes and a QDevice (1 vote): both nodes up, both must have applied; one down, the other alone.

    Alone, the node holds every vote a partition of nodes can hold here; requiring more would
    make the device pointless. It is not safe against the device moving its vote to the other
    node later (what the device arbitrates); the sync round keeps such a history as diverged.
    """
    votes = {1: 1, 2: 1}
    both = view_from(info(expected=3, total=3, quorum=2, device=1, cast=True), votes, configured=2)
    assert both.expected == 3 and both.partition == 2 and both.needed == 2
    assert not confirmed(both, {1}) and confirmed(both, {1, 2})
    lone = view_from(info(expected=3, total=2, quorum=2, device=1, cast=True), {1: 1}, configured=2)
    assert lone.partition == 1 and lone.needed == 1 and confirmed(lone, {1})
    # the device's vote not cast for this partition: no exception, the plain rule
    refused = view_from(info(expected=3, total=1, quorum=2, quorate=False, device=1), {1: 1}, configured=2)
    assert refused.partition is None and refused.needed == 2 and not confirmed(refused, {1})


def test_a_qdevice_with_a_joiner_counts_only_the_voting_node():
    lone = view_from(info(expected=3, total=2, quorum=2, device=1, cast=True), {1: 1, 3: 0}, configured=2)
    assert lone.needed == 1 and confirmed(lone, {1}) and not confirmed(lone, {3})


def test_pvecm_expected_1_lets_the_isolated_node_write_alone():
    """``pvecm expected 1`` on a node cut off from the two others: the operator forces a quorum of one."""
    view = view_from(info(expected=1, total=1, quorum=1), {3: 1}, configured=3)
    assert view.expected == 3  # the votes elsewhere still exist
    assert view.needed == 1 and confirmed(view, {3})


def test_pvecm_expected_lowered_on_a_majority_does_not_forget_the_votes_elsewhere():
    """``pvecm expected 2`` on two nodes of three: one of them alone is not enough (the third and the other one
    would make a quorum of the configured three votes)."""
    votes = {1: 1, 2: 1, 3: 1}
    view = view_from(info(expected=2, total=2, quorum=2), {1: 1, 2: 1}, configured=3)
    assert view.needed == 2 and not confirmed(view, {1}) and confirmed(view, {1, 2})
    assert safe(view, votes, {1, 2}) and not safe(view, votes, {1})
    # votequorum's own figures alone would have let one node confirm
    assert needed_votes(2, 2, 2) == 1


def test_a_quorum_votequorum_kept_high_after_a_removal_is_not_trusted():
    """A node's quorum never drops by itself (3 after going from 4 to 3 nodes); a fresh node computes 2."""
    view = view_from(info(expected=3, total=3, quorum=3), {1: 1, 2: 1, 3: 1}, configured=3)
    assert view.needed == 2


def test_a_non_quorate_view_and_unknown_votes_confirm_nothing_more():
    view = view_from(info(expected=3, total=1, quorum=2, quorate=False), {1: 1}, configured=3)
    assert view.partition is None and view.needed == 2
    known = VoteView(expected=3, quorum=2, partition=3, nodes={1: 1})
    assert known.weight(2) == 0 and not confirmed(known, {1, 2})  # node 2's votes not known: its ack counts nothing
    assert needed_votes(3, 2, 0) == 1  # a partition of nodes without votes still needs a vote: none can give it


# --- waiting -----------------------------------------------------------------------------


def test_wait_counts_votes_and_follows_a_changing_view():
    """The joiner's ack counts once votequorum says its vote is counted (a reload raised it)."""
    tracker = AckTracker()
    views = {"now": VoteView(expected=3, quorum=2, partition=3, nodes={1: 1, 2: 1, 3: 1, 4: 0})}
    tracker.ack(1, 5, "h5")
    tracker.ack(4, 5, "h5")
    assert not tracker.wait(5, "h5", lambda: views["now"], lambda: True, time.monotonic() + 0.2)

    def raise_the_joiners_vote() -> None:
        time.sleep(0.1)
        views["now"] = VoteView(expected=4, quorum=3, partition=4, nodes={1: 1, 2: 1, 3: 1, 4: 1})

    threading.Thread(target=raise_the_joiners_vote).start()
    assert tracker.wait(5, "h5", lambda: views["now"], lambda: True, time.monotonic() + 10)


def test_wait_without_a_view_confirms_nothing_and_a_later_version_counts():
    tracker = AckTracker()
    tracker.ack(1, 5, "h5")
    tracker.ack(2, 5, "h5")
    assert not tracker.wait(5, "h5", lambda: None, lambda: True, time.monotonic() + 0.2)
    view = VoteView(expected=3, quorum=2, partition=3, nodes={1: 1, 2: 1, 3: 1})
    assert not tracker.wait(5, "other", lambda: view, lambda: True, time.monotonic() + 0.2)  # another history
    tracker.ack(3, 6, "h6")  # applied a later version: applied this one too
    assert tracker.applied_by(5, "other") == {3}
    assert tracker.wait(5, "h5", lambda: view, lambda: True, time.monotonic() + 0.2)


def test_wait_ends_when_the_node_loses_its_cluster():
    tracker = AckTracker()
    view = VoteView(expected=3, quorum=2, partition=3, nodes={1: 1, 2: 1, 3: 1})
    tracker.ack(1, 5, "h5")
    started = time.monotonic()
    assert not tracker.wait(5, "h5", lambda: view, lambda: False, started + 30)
    assert time.monotonic() - started < 5


# --- who acknowledges --------------------------------------------------------------------


def test_designated_peers_skip_nodes_without_votes_until_the_target():
    names = ["node1", "node2", "node3", "node4"]
    votes: dict[str, int | None] = {"node1": 1, "node2": 1, "node3": 1, "node4": 0}
    assert designated("node3", names, votes, 2) == ["node1"]  # node4 after node3 holds nothing
    assert designated("node4", names, votes, 2) == ["node1", "node2"]  # an origin without votes needs two
    assert designated("node1", names, votes, 1) == []
    assert designated("node2", names, {**votes, "node3": 2}, 3) == ["node3"]
    unknown: dict[str, int | None] = {**votes, "node1": None}
    assert designated("node3", names, unknown, 2) == ["node1", "node2"]  # asked, counted as none


class _Votes(Transport):
    """A transport that only answers the vote view (the coordinator's choice of acknowledgers)."""

    def __init__(self, view: VoteView | None) -> None:
        self.view = view

    def start(self, sink):  # pragma: no cover - not used
        raise NotImplementedError

    def submit(self, payload):  # pragma: no cover - not used
        raise NotImplementedError

    def quorate(self) -> bool:
        return True

    def stop(self) -> None:  # pragma: no cover - not used
        pass

    def vote_view(self) -> VoteView | None:
        return self.view


def _acknowledgers(view: VoteView | None, origin: str, members: dict[tuple[int, int], str]) -> list[str]:
    chosen = []
    for name in members.values():
        coordinator = Coordinator(
            None,  # type: ignore[arg-type]
            _Votes(view),
            node=name,
            data_dir=Path("/nonexistent"),
            render_all=lambda version: None,
            cluster_log=lambda message, pri: None,
        )
        coordinator.member_names = dict(members)
        if coordinator._must_ack([(origin, b"")]):
            chosen.append(name)
    return sorted(chosen)


def test_the_coordinator_asks_voting_peers_and_never_the_node_without_votes():
    members = {(1, 11): "node1", (2, 12): "node2", (3, 13): "node3", (4, 14): "node4"}
    view = VoteView(expected=3, quorum=2, partition=3, nodes={1: 1, 2: 1, 3: 1, 4: 0})
    assert _acknowledgers(view, "node3", members) == ["node1"]
    assert _acknowledgers(view, "node4", members) == ["node1", "node2"]
    assert _acknowledgers(None, "node3", members) == ["node1", "node2", "node4"]  # votes not known: all acknowledge
    # a need that grew by a joined node's vote not yet seen here: a majority of the known votes is asked
    two = {(1, 11): "node1", (2, 12): "node2", (3, 13): "node3"}
    stale = VoteView(expected=2, quorum=2, partition=2, nodes={1: 1, 2: 1, 3: 0})
    assert stale.needed == 1 and _acknowledgers(stale, "node1", two) == ["node2"]
