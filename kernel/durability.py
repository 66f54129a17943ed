"""Group commit: each step is its own transaction; steps share the fsync.

A FileStorage commit ends with an `fsync` of `Data.fs` inside `tpc_finish`,
under the storage's commit lock: the committing thread waits for the disk,
and so does every step behind it. `GroupCommitFileStorage` is a FileStorage
that, while a kernel asks for it (`defer_sync()`), finishes a transaction
without that `fsync`: the record is written and flushed to the operating
system as before, the transaction is committed and visible to the other
connections, and a flusher thread makes it durable with the next `fsync` of
the file - one `fsync` for every transaction finished before it started.

The rule that makes this safe is the kernel's: nothing produced by a
transaction leaves the process before that transaction is on disk. The
kernel asks `when_durable(callback)` after a commit, and the reply, the
event, the delivery to an external actor goes out from the callback
(`wait_durable()` is the blocking form, for a thread that can wait). Every
transaction still commits alone and is doomed alone; only the disk barrier
is shared (what databases call group commit). While the flusher syncs one
group, workers go on running the next steps, so the disk's latency and the
steps' Python work overlap instead of adding up. When more steps wait
behind the running ones, the flusher first gathers for a moment
(`SyncGroup.gather`, PostgreSQL's `commit_delay`), so that one fsync covers
more of them; a lone step is synced at once.

What a crash does: a killed process (kill -9) loses nothing - the
operating system holds every written page and writes it out. A power loss
can lose the transactions finished after the last completed `fsync`; none
of them had told anyone it was done, and FileStorage drops a torn tail when
it opens. Outside a kernel (`batos init`, the REPL, scripts) the storage
syncs every commit, exactly as FileStorage does.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import TempFormatter

from kernel.metrics import StepLedger

log = logging.getLogger(__name__)

EXIT_DISK_FAILED = 70  # EX_SOFTWARE: fsync failed, the page cache can no longer be trusted
STAGING_KEEP_BYTES = 1 << 20  # a staging buffer grown past this is dropped after its commit


class GroupCommitFileStorage(FileStorage):
    """A FileStorage whose commits can share one `fsync` (see the module text).

    It also stages each transaction's records in memory. FileStorage writes a
    transaction's data records to `Data.fs.tmp` and copies them into
    `Data.fs` at vote: a seek, a write and a read of that file per commit,
    system calls that each give up the GIL to whichever thread wants it. The
    staging file is never read after a crash (an unfinished transaction is
    simply not in `Data.fs`), so a `BytesIO` does its job; a large
    transaction's buffer is dropped once it is finished (blobs never pass
    through it).
    """

    _group: SyncGroup | None = None
    _sync_fd: int | None = None  # a dup of the fd of `_synced_file`, for the flusher
    _synced_file: object = None
    # Told of every finished transaction, in commit order (see kernel.metrics).
    ledger: StepLedger | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._tfile is not None:  # None when read-only
            self._tfile.close()
            self._stage_in_memory()

    def _stage_in_memory(self) -> None:
        self._tfile = io.BytesIO()
        self._tfmt = TempFormatter(self._tfile)

    def _clear_temp(self) -> None:
        if self._tfile is not None and self._tfile.tell() > STAGING_KEEP_BYTES:
            self._tindex.clear()
            self._stage_in_memory()
            return
        super()._clear_temp()

    def defer_sync(self) -> SyncGroup:
        """Start group commit: from now on `tpc_finish` leaves the fsync to a flusher."""
        if self._group is None:
            self._group = SyncGroup(self._sync_file)
        return self._group

    def resume_sync(self) -> None:
        """Stop group commit: sync what is pending and go back to a sync per commit."""
        group, self._group = self._group, None
        if group is not None:
            group.stop()
            self._sync_file()  # a commit that saw the group just before it went
            self._close_sync_fd()

    def close(self) -> None:
        self.resume_sync()
        super().close()

    def _sync_file(self) -> None:
        """fsync `Data.fs`: the file open now, which a pack replaces."""
        file = self._file
        if file is not self._synced_file:  # first sync, or a pack swapped the file
            with self._lock:
                file = self._file
                if self._sync_fd is not None:
                    os.close(self._sync_fd)
                self._sync_fd = os.dup(file.fileno())
                self._synced_file = file
        assert self._sync_fd is not None
        os.fsync(self._sync_fd)

    def _close_sync_fd(self) -> None:
        if self._sync_fd is not None:
            os.close(self._sync_fd)
            self._sync_fd = self._synced_file = None

    def _finish(self, tid: bytes, user: bytes, description: bytes, ext: bytes) -> None:
        super()._finish(tid, user, description, ext)  # still under the commit lock
        if self.ledger is not None:
            self.ledger.committed(tid, description)

    def _finish_finish(self, tid: bytes) -> None:
        group = self._group
        if group is None:
            super()._finish_finish(tid)
            return
        # FileStorage._finish_finish without its fsync (ZODB keeps this step a
        # separate method so it can be replaced); the flusher syncs instead.
        self._file.flush()
        self._pos = self._nextpos
        self._index.update(self._tindex)
        self._ltid = tid
        self._blob_tpc_finish()
        group.finished()


class SyncGroup:
    """Counts finished transactions and syncs them in groups on a flusher thread.

    `finished` is the number of transactions finished so far; `synced` the
    number known to be on disk. A waiter registered when `finished` was N is
    released once `synced >= N`. Waiters are released in the order they came.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._finished = 0
        self._synced = 0
        self._waiters: deque[tuple[int, Callable[[], object]]] = deque()
        self._stopping = False
        self._alive = True
        self._idle = False  # the flusher waits for a transaction to sync
        self._delay_s = 0.0
        self._busy: Callable[[], bool] = _never
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name="batos-fsync", daemon=True)
        self._thread.start()

    def gather(self, delay_s: float, busy: Callable[[], bool]) -> None:
        """Before a sync, while `busy()` says more commits are on their way, wait up
        to `delay_s` so that one fsync covers them too (PostgreSQL's `commit_delay`).

        A lone step syncs at once; under a backlog each fsync covers more steps,
        and the flusher wakes, syncs and hands results to the loop less often.
        """
        with self._cond:
            self._delay_s, self._busy = max(0.0, delay_s), busy

    @property
    def transactions(self) -> int:
        return self._finished

    def finished(self) -> None:
        """A transaction was finished (called by the storage, under its lock)."""
        with self._cond:
            self._finished += 1
            if self._idle:  # wake the flusher only when it waits for work
                self._cond.notify()

    def when_durable(self, callback: Callable[[], object]) -> None:
        """Call `callback` once everything finished so far is on disk.

        At once, on this thread, when nothing is pending; otherwise on the
        flusher thread after its next fsync.
        """
        with self._cond:
            pending = self._synced < self._finished
            if pending and self._alive:
                self._waiters.append((self._finished, callback))
                return
        if pending:  # the flusher has ended (shutdown): sync here
            self._fsync()
        callback()

    def wait_durable(self) -> None:
        """Block until everything finished so far is on disk."""
        with self._cond:
            target = self._finished
            while self._synced < target and self._alive:
                self._cond.wait()
            pending = self._synced < target
        if pending:  # the flusher has ended (shutdown): sync here
            self._fsync()

    def stats(self) -> dict[str, int]:
        return {"transactions": self._finished, "fsyncs": self.fsyncs}

    def stop(self) -> None:
        """Sync what is pending, release every waiter, end the flusher."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._synced >= self._finished and not self._stopping:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if self._synced >= self._finished:  # stopping, nothing left to sync
                    self._alive = False
                    ready = list(self._waiters)
                    self._waiters.clear()
                    self._cond.notify_all()
                    break
                if self._delay_s and not self._stopping and self._busy():
                    self._cond.wait(self._delay_s)  # `stop` cuts it short
                target = self._finished
            self._fsync()
            with self._cond:
                self._synced = target
                ready = []
                while self._waiters and self._waiters[0][0] <= target:
                    ready.append(self._waiters.popleft())
                self._cond.notify_all()
            _call_all(ready)
        _call_all(ready)

    def _fsync(self) -> None:
        try:
            self._sync()
        except OSError:
            # After a failed fsync the kernel may have dropped the dirty pages:
            # nothing written since the last good sync can be called durable, and
            # retrying could report a lie (PostgreSQL's "fsyncgate"). Stop hard;
            # the image reopens at its last durable transaction.
            log.critical("fsync of the image failed; stopping the process", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DISK_FAILED)
        self.fsyncs += 1


def _never() -> bool:
    return False


def _call_all(waiters: list[tuple[int, Callable[[], object]]]) -> None:
    for _ticket, callback in waiters:
        try:
            callback()
        except Exception:  # one failing callback must not strand the others
            log.exception("a durability callback failed")
