"""Group commit (one fsync for many step transactions) and the step ledger."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from kernel.durability import GroupCommitFileStorage, SyncGroup
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.metrics import StepLedger, step_actor, step_note
from kernel.steps import StepRunner


class GatedSync:
    """A sync that blocks until the test lets it go, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)


def test_a_waiter_is_released_only_after_the_sync_covering_it() -> None:
    sync = GatedSync()
    group = SyncGroup(sync)
    try:
        released: list[str] = []
        group.finished()  # a transaction finished, not yet on disk
        group.when_durable(lambda: released.append("first"))
        assert sync.entered.wait(5)
        assert released == []  # the fsync has not returned: nothing may go out
        sync.release.set()
        group.wait_durable()
        assert released == ["first"]
    finally:
        sync.release.set()
        group.stop()


def test_nothing_pending_calls_back_at_once_without_a_sync() -> None:
    sync = GatedSync()
    sync.release.set()
    group = SyncGroup(sync)
    try:
        released: list[int] = []
        group.when_durable(lambda: released.append(1))
        assert released == [1] and sync.calls == 0
    finally:
        group.stop()


def test_one_sync_covers_every_transaction_finished_before_it() -> None:
    sync = GatedSync()
    group = SyncGroup(sync)
    try:
        released: list[int] = []
        group.finished()
        group.when_durable(lambda: released.append(0))
        assert sync.entered.wait(5)  # the flusher is inside the first fsync
        for n in range(1, 6):  # five more commits while the disk works
            group.finished()
            group.when_durable(lambda n=n: released.append(n))
        sync.release.set()
        group.wait_durable()
        assert released == [0, 1, 2, 3, 4, 5]  # in the order they came
        assert sync.calls == 2  # one for the first, one for the five behind it
        assert group.stats() == {"transactions": 6, "fsyncs": 2}
    finally:
        group.stop()


def test_stop_syncs_what_is_pending_and_releases_every_waiter() -> None:
    sync = GatedSync()
    sync.release.set()
    group = SyncGroup(sync)
    released: list[int] = []
    group.finished()
    group.when_durable(lambda: released.append(1))
    group.stop()
    assert released == [1] and sync.calls >= 1
    group.finished()  # after the flusher ended: synced on the caller's thread
    group.when_durable(lambda: released.append(2))
    assert released == [1, 2] and sync.calls >= 2


def test_storage_in_group_mode_commits_and_syncs_later(image: Image) -> None:
    storage = image.db.storage
    assert isinstance(storage, GroupCommitFileStorage)
    group = image.group_commit()
    assert group is not None
    runner = StepRunner(image.connection(), image.config)
    for n in range(20):
        assert runner.run_message(Envelope("system", "echo", (n,))).ok
    group.wait_durable()
    assert group.transactions == 20
    assert 1 <= group.fsyncs <= 20
    image.end_group_commit()
    with image.reading() as root:
        assert root["actors"]["system"].echoes == 20


def test_step_notes_name_their_actor() -> None:
    note = step_note("a.b", "echo", "direct.x", " (external)").encode()
    assert step_actor(note) == "a.b"
    assert step_actor(b"genesis") is None
    assert step_actor(b"step nodot key") is None
    assert step_actor(b"step failed a.echo k") is None  # a failure record, not a step
    assert step_actor(b"a handler's own note\nstep a.echo k") == "a"  # an older note


def test_a_selector_with_a_dot_is_counted_under_its_actor() -> None:
    note = step_note("ocr", "read.page", "0001.x").encode()
    assert step_actor(note) == "ocr"
    assert step_actor(step_note("a.b", "c.d", "k", " (external)").encode()) == "a.b"


def test_the_ledger_counts_steps_in_commit_order() -> None:
    ledger = StepLedger()
    ledger.committed(b"\x00" * 7 + b"\x01", b"step a.x k1")
    ledger.committed(b"\x00" * 7 + b"\x02", b"admit a.x k2")
    ledger.committed(b"\x00" * 7 + b"\x03", b"step b.y k3")
    counts, through = ledger.take()
    assert counts == {"a": 1, "b": 1} and through == b"\x00" * 7 + b"\x03"
    assert ledger.pending() == {}
    ledger.give_back(counts)
    assert ledger.pending() == {"a": 1, "b": 1}


def _echo(image: Image, count: int) -> None:
    runner = StepRunner(image.connection(), image.config)
    for n in range(count):
        assert runner.run_message(Envelope("system", "echo", (n,))).ok


def test_step_counts_are_exact_before_and_after_a_flush(image: Image) -> None:
    _echo(image, 7)
    with image.reading() as root:  # counted by the ledger, not yet in the counters
        assert root["metrics"].value("steps.actor.system") == 7
        assert root["metrics"].counters.get("steps.actor.system") is None
    assert image.flush_step_counts() == 7
    _echo(image, 3)
    with image.reading() as root:
        metrics = root["metrics"]
        assert int(metrics.counters["steps.actor.system"]()) == 7
        assert metrics.value("steps.actor.system") == 10
        assert metrics.value("steps.committed") == 10
        assert metrics.snapshot("steps.")["steps.actor.system"] == 10


def test_steps_after_the_last_flush_are_recounted_after_a_crash(image_dir: Path) -> None:
    image = Image.open(image_dir)
    _echo(image, 5)
    image.flush_step_counts()
    _echo(image, 4)  # committed, never flushed: the process "dies" here
    for conn in list(image._connections):
        conn.close()
    image.db.close()  # no Image.close(): no flush
    with Image.open(image_dir) as again, again.reading() as root:
        assert root["actors"]["system"].echoes == 9
        assert int(root["metrics"].counters["steps.actor.system"]()) == 9
        assert root["metrics"].value("steps.actor.system") == 9
    with Image.open(image_dir) as third, third.reading() as root:  # counted once only
        assert root["metrics"].value("steps.actor.system") == 9


def test_transactions_are_staged_in_memory_and_a_large_buffer_is_dropped(
        tmp_path: Path) -> None:
    import io

    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping

    from kernel.durability import STAGING_KEEP_BYTES

    storage = GroupCommitFileStorage(str(tmp_path / "Data.fs"))
    db = ZODB.DB(storage)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        root = conn.root()
        root["small"] = PersistentMapping(value=1)
        tm.commit()
        staging = storage._tfile
        assert isinstance(staging, io.BytesIO)
        root["big"] = PersistentMapping(value=b"x" * (STAGING_KEEP_BYTES + 1))
        root["small"]["value"] = 2
        tm.commit()
        assert storage._tfile is not staging  # the grown buffer went with its commit
        root["small"]["value"] = 3
        tm.commit()
        assert (tmp_path / "Data.fs.tmp").stat().st_size == 0  # the disk file is unused
    finally:
        db.close()
    db = ZODB.DB(GroupCommitFileStorage(str(tmp_path / "Data.fs")))
    try:
        root = db.open().root()
        assert root["small"]["value"] == 3
        assert root["big"]["value"] == b"x" * (STAGING_KEEP_BYTES + 1)
    finally:
        db.close()


class CountingSync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@contextlib.contextmanager
def gathering(delay_s: float,
              busy: Callable[[], bool]) -> Iterator[tuple[SyncGroup, CountingSync]]:
    """A sync group that gathers for `delay_s` while `busy()`; stopped afterwards."""
    sync = CountingSync()
    group = SyncGroup(sync)
    group.gather(delay_s, busy)
    try:
        yield group, sync
    finally:
        group.stop()


def test_under_a_backlog_one_sync_gathers_the_commits_of_its_delay() -> None:
    asked = threading.Event()

    def busy() -> bool:  # asked once the flusher has a commit to sync
        asked.set()
        return True
    with gathering(1.0, busy) as (group, sync):
        released = [threading.Event() for _ in range(3)]
        group.finished()
        group.when_durable(released[0].set)
        assert asked.wait(5)  # the flusher now waits for more
        for event in released[1:]:
            group.finished()
            group.when_durable(event.set)
        assert all(event.wait(10) for event in released)
        assert sync.calls == 1


def test_without_a_backlog_a_commit_syncs_at_once() -> None:
    with gathering(30.0, lambda: False) as (group, sync):  # a delay no test could sit out
        released = threading.Event()
        group.finished()
        group.when_durable(released.set)
        assert released.wait(5)
        assert sync.calls == 1


def test_stop_cuts_a_gathering_delay_short() -> None:
    with gathering(30.0, lambda: True) as (group, sync):
        released = threading.Event()
        group.finished()
        group.when_durable(released.set)
        stopper = threading.Thread(target=group.stop)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive()
        assert released.is_set() and sync.calls == 1
