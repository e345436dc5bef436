"""The sync plan (pure logic): who wins, who gets a delta, who gets a snapshot, who diverged."""

from __future__ import annotations

import random

from replicator.applier import GENESIS_HASH, chain_hash
from replicator.sync_plan import BEHIND, FORKED, UNPROVEN, MemberState, make_plan, pack, unpack


def history(tag: str, length: int, base: list[str] | None = None) -> list[str]:
    """Hashes after each version (index 0 = genesis), extending ``base`` with writes named by ``tag``."""
    hashes = list(base or [GENESIS_HASH])
    while len(hashes) <= length:
        hashes.append(chain_hash(hashes[-1], f"{tag}-{len(hashes)}".encode()))
    return hashes


def cluster(members: dict[tuple[int, int], tuple[list[str], int, int]]):
    """states and hash answers from {member: (history hashes, version, oldest retained)}."""
    states = {
        m: MemberState(f"node{m[0]}", version, hashes[version], low) for m, (hashes, version, low) in members.items()
    }
    versions = {s.version for s in states.values()}
    answers = {
        m: {str(v): (hashes[v] if v >= low or v == 0 else None) for v in versions if v < version}
        for m, (hashes, version, low) in members.items()
    }
    return states, answers


def test_equal_members_need_nothing():
    h = history("a", 10)
    plan = make_plan(*cluster({(1, 10): (h, 10, 1), (2, 20): (h, 10, 1), (3, 30): (h, 10, 1)}))
    assert plan.delta == {} and plan.snapshot == {}
    assert plan.sender == (1, 10)


def test_behind_member_gets_a_delta_from_the_lowest_up_to_date_member():
    h = history("a", 50)
    plan = make_plan(*cluster({(1, 1): (h, 30, 1), (2, 2): (h, 50, 1), (3, 3): (h, 50, 1)}))
    assert plan.sender == (2, 2) and plan.delta == {(1, 1): 30} and plan.snapshot == {}


def test_a_member_behind_the_retained_log_cannot_be_proven_a_prefix_so_its_state_is_kept():
    h = history("a", 5000)
    plan = make_plan(*cluster({(1, 1): (h, 5000, 4001), (2, 2): (h, 10, 1)}))
    assert plan.snapshot == {(2, 2): UNPROVEN} and plan.delta == {}
    assert plan.keeps_state((2, 2))


def test_a_fork_older_than_the_retained_log_is_not_overwritten_silently():
    """The forced minority wrote at versions the majority pruned since: nothing proves it a prefix."""
    common = history("a", 20)
    majority = history("majority", 5000, common[:21])
    minority = history("minority", 30, common[:21])
    plan = make_plan(
        *cluster({(1, 1): (majority, 5000, 4001), (2, 2): (majority, 5000, 4001), (3, 3): (minority, 30, 1)})
    )
    assert plan.winner == (1, 1) and plan.snapshot == {(3, 3): UNPROVEN} and plan.keeps_state((3, 3))


def test_an_empty_node_gets_a_snapshot_even_when_the_whole_log_is_kept():
    h = history("a", 100)
    plan = make_plan(*cluster({(1, 1): (h, 100, 1), (4, 4): (h, 0, 1)}))
    assert plan.delta == {} and plan.snapshot == {(4, 4): BEHIND}
    assert not plan.keeps_state((4, 4))


def test_the_majority_history_wins_over_a_longer_forced_minority():
    common = history("a", 20)
    majority = history("majority", 25, common[:21])
    minority = history("minority", 40, common[:21])
    plan = make_plan(*cluster({(1, 1): (majority, 25, 1), (2, 2): (majority, 25, 1), (3, 3): (minority, 40, 1)}))
    assert plan.winner == (1, 1) and plan.snapshot == {(3, 3): FORKED} and plan.delta == {}


def test_a_member_ahead_whose_log_cannot_prove_the_others_loses_and_keeps_its_state():
    """It extends the others' history, but pruned the entry that would prove it: no support from them."""
    h = history("a", 5000)
    plan = make_plan(*cluster({(1, 1): (h, 3000, 1), (2, 2): (h, 3000, 1), (3, 3): (h, 5000, 4001)}))
    assert plan.winner == (1, 1) and plan.snapshot == {(3, 3): FORKED} and plan.keeps_state((3, 3))


def test_same_version_different_hash_is_divergence():
    common = history("a", 5)
    left, right = history("l", 8, common[:6]), history("r", 8, common[:6])
    plan = make_plan(*cluster({(1, 1): (left, 8, 1), (2, 2): (left, 8, 1), (3, 3): (right, 8, 1)}))
    assert plan.snapshot == {(3, 3): FORKED}


def test_a_delta_starts_within_the_senders_own_log():
    """The lowest up-to-date member sends; after a snapshot of its own it holds only its head entry."""
    h = history("a", 300)
    plan = make_plan(*cluster({(1, 1): (h, 300, 300), (2, 2): (h, 300, 1), (3, 3): (h, 250, 1)}))
    assert plan.winner == (2, 2) and plan.sender == (1, 1)
    assert plan.delta == {} and plan.snapshot == {(3, 3): BEHIND}


def test_every_member_computes_the_same_plan_whatever_the_arrival_order():
    rng = random.Random(7)
    base = history("base", 30)
    for _ in range(200):
        members = {}
        for nodeid in range(1, rng.randint(2, 6)):
            branch = history(f"b{rng.randint(0, 2)}", 30 + rng.randint(0, 10), base[: rng.randint(1, 31)])
            version = rng.randint(0, len(branch) - 1)
            members[(nodeid, 100 + nodeid)] = (branch, version, rng.choice([1, 5, 20, 35]))
        states, answers = cluster(members)
        shuffled = list(states.items())
        rng.shuffle(shuffled)
        first = make_plan(states, answers)
        second = make_plan(dict(shuffled), answers)
        assert first == second
        top = states[first.winner]
        winning = members[first.winner][0]
        for member in first.delta:  # a delta receiver holds a prefix of the winning history
            assert winning[states[member].version] == states[member].hash
            assert states[member].version < top.version
            assert states[first.sender].low <= states[member].version + 1  # the sender holds what follows
        for member, why in first.snapshot.items():  # only a proven prefix is replaced without being kept
            prefix = states[member].version < len(winning) and winning[states[member].version] == states[member].hash
            if why == BEHIND:
                assert prefix and states[member].version < top.version
            else:
                assert first.keeps_state(member)
        assert set(first.delta) | set(first.snapshot) == {
            m for m, s in states.items() if (s.version, s.hash) != (top.version, top.hash)
        }


def test_sync_messages_round_trip_with_binary_blobs():
    header, blob = unpack(pack({"t": "delta", "entries": [[1, "a", "n", "h", 3]]}, b"\x00\xff\x01"))
    assert header["t"] == "delta" and blob == b"\x00\xff\x01"
