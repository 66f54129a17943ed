"""Is `Data.fs` a well-formed FileStorage? The checks behind opening and `image verify`.

Theory of operation
-------------------
A FileStorage is a 4-byte magic followed by transaction records, each a
23-byte header (tid, length, status, user/description/extension lengths), its
data records (42-byte headers, `tloc` pointing back at the transaction) and the
length again as a trailer. ZODB's own opening code trusts the tail it did not
index yet: garbage appended after the last transaction becomes a transaction in
the year 5000, or a `UnicodeDecodeError` from its status byte.

So the image checks before ZODB reads:

- `check_before_open` walks the records ZODB is about to scan (from the
  position saved in `Data.fs.index`, or the whole file without one) and tells a
  *torn tail* — a transaction cut short by a crash, which FileStorage saves
  aside as `Data.fs.trN` and drops, as it always did — from *damage*: a record
  that could never have been written (time running backwards or centuries
  ahead, an unknown status, lengths that disagree, a file shorter than its own
  index). Zero bytes up to the end (a power cut) count as a torn tail too.
  Damage raises `DamagedImage`, which names the byte and what to do.
- `verify` (`batos image verify`) walks the whole file the same way, then reads
  every object record's pickle and checks that every reference it holds leads
  to a stored object (the checks of ZODB's `fstest` and `fsrefs` scripts, with
  typed results instead of printed text).

What no check can see: bytes overwritten inside a string value of a pickle
(FileStorage keeps no checksums). That is what backups are for.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from persistent.timestamp import TimeStamp
from ZODB._compat import FILESTORAGE_MAGIC
from ZODB.fsIndex import fsIndex
from ZODB.serialize import referencesf
from ZODB.utils import u64

from kernel.errors import DamagedImage

TXN_HEADER = struct.Struct(">8sQcHHH")  # tid, length, status, user, description, extension
DATA_HEADER = struct.Struct(">8s8sQQHQ")  # oid, tid, prev, txn pos, version, pickle
FUTURE_SLACK_S = 86_400.0  # a clock set back by less than a day is not damage


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in `Data.fs`: where, what, and the object when known."""

    position: int
    problem: str
    oid: int | None = None


@dataclass(slots=True)
class Transaction:
    """A transaction record read back: its position, tid and object records."""

    position: int
    tid: bytes
    end: int  # position of the next transaction
    records: list[tuple[int, bytes, int]] = field(default_factory=list)  # (pos, oid, pickle)


@dataclass(slots=True)
class VerifyReport:
    """What `batos image verify` found."""

    path: str
    size: int
    transactions: int = 0
    records: int = 0
    objects: int = 0
    torn_tail_at: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Bad(Exception):
    """A record that cannot be read; `torn` when a crash explains it (end of file)."""

    def __init__(self, position: int, problem: str, *, torn: bool = False) -> None:
        super().__init__(problem)
        self.position = position
        self.problem = problem
        self.torn = torn


def check_before_open(data_fs: Path) -> int | None:
    """Refuse a damaged `Data.fs` before ZODB reads it; returns where a torn tail starts.

    Walks the records after the indexed position (all of them without an index).
    """
    size = data_fs.stat().st_size
    with data_fs.open("rb") as handle:
        _check_magic(handle, size, str(data_fs))
        start, ltid = _indexed_end(handle, data_fs, size)
        try:
            for _txn in _transactions(handle, start, size, ltid):
                pass
        except _Bad as bad:
            if bad.torn or _zeros_from(handle, bad.position):
                return bad.position
            raise DamagedImage(str(data_fs), bad.position, bad.problem) from None
    return None


def verify(data_fs: Path) -> VerifyReport:
    """Check every transaction, record, pickle and reference of `data_fs`."""
    report = VerifyReport(str(data_fs), data_fs.stat().st_size)
    stored: set[bytes] = set()
    pickles: list[tuple[int, bytes, int]] = []
    with data_fs.open("rb") as handle:
        try:
            _check_magic(handle, report.size, str(data_fs))
            for txn in _transactions(handle, 4, report.size, b"\0" * 8):
                report.transactions += 1
                report.records += len(txn.records)
                stored.update(oid for _pos, oid, _len in txn.records)
                pickles.extend(txn.records)
        except DamagedImage as exc:
            report.problems.append(Problem(exc.position, exc.damage))
            return report
        except _Bad as bad:
            if bad.torn or _zeros_from(handle, bad.position):
                report.torn_tail_at = bad.position
            else:
                report.problems.append(Problem(bad.position, bad.problem))
        report.objects = len(stored)
        report.problems.extend(_check_pickles(handle, pickles, stored))
    return report


def _zeros_from(handle: BinaryIO, pos: int, chunk: int = 1 << 16) -> bool:
    """Only zero bytes from `pos` to the end: blocks a file system allocated but a
    power cut kept from being written. ZODB drops them as a torn tail; so do we."""
    handle.seek(pos)
    while block := handle.read(chunk):
        if block.count(0) != len(block):
            return False
    return True


# -- reading records ---------------------------------------------------------------------


def _check_magic(handle: BinaryIO, size: int, where: str) -> None:
    if size < len(FILESTORAGE_MAGIC) or handle.read(len(FILESTORAGE_MAGIC)) != FILESTORAGE_MAGIC:
        raise DamagedImage(where, 0, "not a FileStorage file (its first bytes are wrong)")


def _indexed_end(handle: BinaryIO, data_fs: Path, size: int) -> tuple[int, bytes]:
    """Where ZODB will start scanning and the tid before it (from `Data.fs.index`)."""
    index_path = data_fs.with_name(data_fs.name + ".index")
    try:
        info = fsIndex.load(str(index_path))
        pos = int(info["pos"])
    except Exception:  # a missing or unreadable index: ZODB rebuilds it from the start
        return 4, b"\0" * 8
    if pos > size:
        raise DamagedImage(str(data_fs), size, f"the file ends before the {pos} bytes its "
                           "index records: it was truncated and committed work is lost")
    if pos <= 4:
        return 4, b"\0" * 8
    return pos, _tid_ending_at(handle, pos, str(data_fs))


def _tid_ending_at(handle: BinaryIO, pos: int, where: str) -> bytes:
    seek, read = handle.seek, handle.read
    seek(pos - 8)
    length = u64(read(8))
    start = pos - 8 - length
    if start < 4:
        raise DamagedImage(where, pos - 8, "the transaction its index ends on is unreadable")
    seek(start)
    header = read(TXN_HEADER.size)
    tid, stated, *_ = TXN_HEADER.unpack(header)
    if stated != length:
        raise DamagedImage(where, start, "the transaction its index ends on is unreadable")
    return bytes(tid)


def _transactions(handle: BinaryIO, pos: int, size: int, ltid: bytes) -> Iterator[Transaction]:
    while pos < size:
        txn = _read_transaction(handle, pos, size, ltid)
        yield txn
        pos, ltid = txn.end, txn.tid


def _read_transaction(handle: BinaryIO, pos: int, size: int, ltid: bytes) -> Transaction:
    seek, read = handle.seek, handle.read
    seek(pos)
    header = read(TXN_HEADER.size)
    if len(header) < TXN_HEADER.size:
        raise _Bad(pos, "a transaction header cut short by the end of the file", torn=True)
    tid, length, status, ulen, dlen, elen = TXN_HEADER.unpack(header)
    _check_tid(pos, tid, ltid)
    if status not in b" upc":
        raise _Bad(pos, f"a transaction with the unknown status byte {status!r}")
    meta = TXN_HEADER.size + ulen + dlen + elen
    if meta > length:
        raise _Bad(pos, "a transaction shorter than its own header says")
    end = pos + length
    if end + 8 > size:
        raise _Bad(pos, "a transaction cut short by the end of the file", torn=True)
    if status == b"c":
        torn = end + 8 == size
        raise _Bad(pos, "a transaction whose commit never finished", torn=torn)
    txn = Transaction(pos, tid, end + 8)
    if status != b"u":
        txn.records = _read_records(handle, pos, pos + meta, end)
    seek(end)
    if u64(read(8)) != length:
        raise _Bad(end, "a transaction whose trailing length disagrees with its header")
    return txn


def _check_tid(pos: int, tid: bytes, ltid: bytes) -> None:
    if tid <= ltid:
        raise _Bad(pos, "a transaction older than the one before it (time runs backwards)")
    when = TimeStamp(tid).timeTime()
    if when > time.time() + FUTURE_SLACK_S:
        year = TimeStamp(tid).year()
        raise _Bad(pos, f"a transaction dated in the year {year}")


def _read_records(handle: BinaryIO, tpos: int, pos: int, end: int) -> list[tuple[int, bytes, int]]:
    seek, read = handle.seek, handle.read
    records = []
    while pos < end:
        seek(pos)
        header = read(DATA_HEADER.size)
        if len(header) < DATA_HEADER.size or pos + DATA_HEADER.size > end:
            raise _Bad(pos, "an object record running past its transaction")
        oid, _tid, _prev, tloc, vlen, plen = DATA_HEADER.unpack(header)
        if tloc != tpos or vlen:
            raise _Bad(pos, "an object record that does not belong to its transaction")
        length = DATA_HEADER.size + (plen or 8)
        if pos + length > end:
            raise _Bad(pos, "an object record running past its transaction")
        records.append((pos, bytes(oid), plen))
        pos += length
    return records


def _check_pickles(handle: BinaryIO, records: list[tuple[int, bytes, int]],
                   stored: set[bytes]) -> Iterator[Problem]:
    seek, read = handle.seek, handle.read
    for pos, oid, plen in records:
        if not plen:
            continue  # a back pointer (undo or a blob's copy): nothing to read here
        seek(pos + DATA_HEADER.size)
        try:
            refs = referencesf(read(plen))
        except Exception:  # any unpickling failure: the bytes are not a pickle
            yield Problem(pos, "an object record whose pickle cannot be read", u64(oid))
            continue
        for ref in refs:
            if ref not in stored:
                yield Problem(pos, f"a reference to the missing object 0x{u64(ref):x}",
                              u64(oid))
