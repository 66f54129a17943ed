"""Leases in the image (`kernel.leases`) on a real in-memory ZODB: claims, renewals,
takeovers after expiry, eligibility, and where concurrent kernels conflict."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from transaction.interfaces import NoTransaction
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConflictError

from kernel import leases
from kernel.errors import NotLeaseHolder
from kernel.leases import LeaseGuard, LeaseSpec

ACTORS = ("missions", "router", "drafter", "critic")


@pytest.fixture
def db() -> Iterator[ZODB.DB]:
    database = ZODB.DB(MappingStorage())
    with database.transaction() as conn:
        conn.root()["actors"] = OOBTree({name: PersistentMapping() for name in ACTORS})
    yield database
    for conn in OPEN:
        with contextlib.suppress(NoTransaction):
            conn.transaction_manager.abort()
        conn.close()
    OPEN.clear()
    database.close()


OPEN: list[ZODB.Connection.Connection] = []


def connect(db: ZODB.DB) -> ZODB.Connection.Connection:
    conn = db.open(transaction_manager=transaction.TransactionManager(explicit=True))
    OPEN.append(conn)
    return conn


def spec(kernel: str, *patterns: str, ttl: float = 10.0) -> LeaseSpec:
    return LeaseSpec(kernel, patterns or ("*",), ttl)


def claim_at(db: ZODB.DB, who: LeaseSpec, now: float) -> leases.LeaseRound:
    conn = connect(db)
    with conn.transaction_manager:
        found = leases._claim(conn.root(), who, now)
    return found


def test_the_first_kernel_claims_what_it_may_run_and_the_second_the_rest(db: ZODB.DB) -> None:
    a, b = spec("a", "missions", "r*"), spec("b")
    assert claim_at(db, a, 100.0).held == {"missions", "router"}
    found = claim_at(db, b, 101.0)
    assert found.held == {"drafter", "critic"}
    assert {n: row["kernel"] for n, row in found.table.items()} == {
        "missions": "a", "router": "a", "drafter": "b", "critic": "b"}
    assert claim_at(db, a, 102.0).held == {"missions", "router"}  # a renewal keeps them


def test_an_expired_kernels_leases_are_taken_over_by_an_eligible_one(db: ZODB.DB) -> None:
    a, b, c = spec("a"), spec("b"), spec("c", "critic")
    assert claim_at(db, a, 100.0).held == set(ACTORS)
    assert claim_at(db, b, 105.0).held == set()  # a's record lives until 110
    assert claim_at(db, c, 111.0).held == {"critic"}  # a expired; c may run the critic only
    found = claim_at(db, b, 111.5)
    assert found.held == {"missions", "router", "drafter"}
    assert {n: r["takeovers"] for n, r in found.table.items()} == {
        "missions": 1, "router": 1, "drafter": 1, "critic": 1}
    restarted = LeaseSpec("a", ("*",), 10.0)  # a new incarnation of a
    assert claim_at(db, restarted, 112.0).held == set()  # every lease is held: it waits


def test_a_live_record_of_the_same_id_blocks_another_process(db: ZODB.DB) -> None:
    first, second = LeaseSpec("a", ("*",), 10.0), LeaseSpec("a", ("*",), 10.0)
    claim_at(db, first, 100.0)
    blocked = claim_at(db, second, 105.0)
    assert blocked.held == set() and blocked.blocked_by is not None
    assert claim_at(db, second, 110.5).held == set(ACTORS)  # the old one expired


def test_renewals_of_two_kernels_never_conflict(db: ZODB.DB) -> None:
    a, b = spec("a", "missions"), spec("b", "drafter")
    claim_at(db, a, 100.0)
    claim_at(db, b, 100.0)
    one, two = connect(db), connect(db)
    one.transaction_manager.begin()
    two.transaction_manager.begin()
    assert leases._claim(one.root(), a, 103.0).held == {"missions"}
    assert leases._claim(two.root(), b, 103.0).held == {"drafter"}
    one.transaction_manager.commit()
    two.transaction_manager.commit()  # different records, no new lease: no conflict


def test_two_kernels_racing_for_one_expired_lease_conflict(db: ZODB.DB) -> None:
    claim_at(db, spec("a", "drafter"), 100.0)
    one, two = connect(db), connect(db)
    one.transaction_manager.begin()
    two.transaction_manager.begin()
    assert leases._claim(one.root(), spec("b", "drafter"), 200.0).held == {"drafter"}
    assert leases._claim(two.root(), spec("c", "drafter"), 200.0).held == {"drafter"}
    one.transaction_manager.commit()
    with pytest.raises(ConflictError):
        two.transaction_manager.commit()
    two.transaction_manager.abort()
    two.transaction_manager.begin()  # the retry sees the winner
    assert leases._claim(two.root(), spec("c", "drafter"), 200.5).held == set()


def test_the_guard_dooms_writes_of_actors_not_held_and_lets_reads_pass(db: ZODB.DB) -> None:
    a = spec("a", "missions")
    claim_at(db, a, 1e12)  # far future: valid by any clock
    claim_at(db, spec("b"), 1e12)
    found = claim_at(db, a, 1e12)  # the renewal that sees b's leases
    guard = LeaseGuard(a)
    guard.update(found)
    conn = connect(db)
    conn.transaction_manager.begin()
    root = conn.root()
    with pytest.raises(NotLeaseHolder) as refused:
        guard.check(conn, root, "drafter", writes=True)
    assert (refused.value.actor, refused.value.holder) == ("drafter", "b")
    assert guard.check(conn, root, "drafter", writes=False) is False
    assert guard.check(conn, root, "missions", writes=True) is True
    conn.transaction_manager.abort()


def test_a_takeover_before_commit_dooms_the_old_holders_step(db: ZODB.DB) -> None:
    a = spec("a", "missions")
    found = claim_at(db, a, 1e12)
    guard = LeaseGuard(a)
    guard.update(found)
    step = connect(db)
    step.transaction_manager.begin()
    root = step.root()
    guard.check(step, root, "missions", writes=True)  # read current: the lease as of now
    root["actors"]["missions"]["touched"] = True
    thief = connect(db)
    with thief.transaction_manager:
        thief.root()["leases"]["missions"].take("b", 1e12)
    with pytest.raises(ConflictError):
        step.transaction_manager.commit()
    step.transaction_manager.abort()


def test_the_repl_and_ps_show_who_holds_what(db: ZODB.DB) -> None:
    from actors.cli_ps import lease_line

    conn = connect(db)
    conn.transaction_manager.begin()
    assert leases.lease_lines(conn.root()) == [
        "no leases: one kernel on a local image runs every actor"]
    conn.transaction_manager.abort()
    claim_at(db, spec("a", "missions"), 100.0)
    found = claim_at(db, spec("b"), 100.0)
    conn.transaction_manager.begin()
    lines = leases.lease_lines(conn.root(), now=105.0)
    conn.transaction_manager.abort()
    assert [line.split(":")[0] for line in lines[:2]] == ["kernel a", "kernel b"]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["critic", "b"], ["drafter", "b"], ["missions", "a"], ["router", "b"]]
    view = {"mode": "shared", "kernel": "b", "held": sorted(found.held), "image": "up",
            "table": found.table}
    assert lease_line(view) == ("leases  kernel b holds critic, drafter, router; image up; "
                                "other kernels: a")
    assert "every actor" in lease_line({"mode": "sole"})


def test_a_clean_stop_hands_the_actors_on_at_once(db: ZODB.DB) -> None:
    a, b = spec("a"), spec("b")
    now = time.time()
    assert claim_at(db, a, now).held == set(ACTORS)
    assert claim_at(db, b, now).held == set()
    assert leases.release(connect(db), a) is True
    assert claim_at(db, b, now + 0.1).held == set(ACTORS)  # long before a's ttl
    assert leases.release(connect(db), LeaseSpec("b", ("*",), 10.0)) is False  # not its record
