"""The living image: a ZODB database holding every actor, mission and message.

Theory of operation
-------------------
An image lives in a directory: `Data.fs` (a FileStorage) with `blobs/`
beside it, `batos.toml` (configuration) and, later, sockets and keys. When the
`image.zeo` setting names a ZEO server the directory keeps only configuration
and a blob cache, and the storage is the server's; nothing else changes.

`Image.open` opens (and by default creates) the storage and runs genesis,
which is idempotent: it adds whatever root containers are missing and then
asks every installed actor package (entry-point group `batos.actors`) to
install its actors. The kernel never imports an actor package by name.

Before the storage opens, the directory is made owner-only (`kernel.perms`;
a read-only open only warns) and `Data.fs` is checked (`kernel.integrity`): a
crash's torn tail is left to FileStorage, which sets it aside when writing and
ignores it when reading; damage raises `DamagedImage` and nothing is touched.

Connections are per thread: `Image.connection()` gives one with its own
transaction manager; `Image.transaction()` is the short-lived form.
`Image.open(at=...)` opens a read-only view of the image as it was then;
`read_only=True` opens the present read-only (no genesis, nothing committed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from transaction.interfaces import NoTransaction
from zc.lockfile import LockError
from ZODB.Connection import Connection
from ZODB.FileStorage.FileStorage import FileStorageFormatError
from ZODB.FileStorage.format import CorruptedError
from ZODB.POSException import POSKeyError, StorageError
from ZODB.utils import get_pickle_metadata, p64, u64

import prototypes.genesis
from kernel import config as config_mod
from kernel import integrity, mailbox, metrics, perms, system
from kernel.durability import GroupCommitFileStorage, SyncGroup
from kernel.errors import DamagedImage, ImageError, ImageLocked, ImageMissing, UnknownObject
from kernel.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_IMAGE = Path("live_image")
GENESIS_VERSION = 1
ENTRY_POINT_GROUP = "batos.actors"

# Root containers created by genesis; each grows, so each is a BTree.
ROOT_CONTAINERS = (
    "prototypes", "actors", "missions", "mailboxes", "memory",
    "adapters", "models", "audits",
)


@dataclass(frozen=True, slots=True)
class Revision:
    """One committed revision of an object."""

    tid: str
    time: dt.datetime
    user: str
    description: str
    size: int


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What `batos image info` prints."""

    location: str
    objects_by_kind: dict[str, int]
    storage_bytes: int
    last_transaction: dt.datetime | None
    last_tid: str
    created: dt.datetime | None
    read_only: bool


class Image:
    """An open living image: the ZODB database plus its configuration."""

    def __init__(self, db: ZODB.DB, directory: Path, config: config_mod.Config,
                 *, read_only: bool, at: dt.datetime | None) -> None:
        self.db = db
        self.directory = directory
        self.config = config
        self.read_only = read_only
        self.at = at
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, directory: Path | str = DEFAULT_IMAGE, *, create: bool = True,
             read_only: bool = False, at: dt.datetime | None = None,
             overrides: dict[str, Any] | None = None) -> Image:
        """Open the image in `directory`, creating it and running genesis if asked.

        A past time `at` opens a read-only view. Raises `ImageLocked` when
        another process holds a local image for writing.
        """
        directory = Path(directory)
        read_only = read_only or at is not None
        if not read_only:
            perms.owner_only_umask()
        if not directory.exists():
            if not create or read_only:
                raise ImageMissing(str(directory))
            perms.make_directory(directory)
        _narrow_modes(directory, read_only=read_only)
        cfg = config_mod.load(directory, overrides)
        storage = _open_storage(directory, cfg, read_only=read_only, create=create)
        db = ZODB.DB(storage, cache_size=cfg["image.cache_size"])
        image = cls(db, directory, cfg, read_only=read_only, at=at)
        if not read_only:
            config_mod.write_default(directory)
            image.genesis()
            image._start_step_ledger()
        return image

    def close(self) -> None:
        """Close every connection still open (aborting its work), then the database."""
        for conn in list(self._connections):
            if conn.opened:
                tm = conn.transaction_manager
                with contextlib.suppress(NoTransaction):
                    tm.abort()
                conn.close()
        if not self.read_only:
            self.flush_step_counts()
        self.db.close()

    def flush_step_counts(self) -> int:
        """Add the step ledger's counts to the image's counters (see kernel.metrics)."""
        return metrics.flush_ledger(self.db, self.config["steps.max_attempts"])

    def _start_step_ledger(self) -> None:
        storage = self.db.storage
        if not isinstance(storage, GroupCommitFileStorage) or storage.ledger is not None:
            return
        recounted = metrics.resume_ledger(self.db, self.config["steps.max_attempts"])
        if recounted:
            log.info("recounted %d steps committed after the last metrics flush", recounted)
        storage.ledger = metrics.StepLedger()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------
    def connection(self) -> Connection:
        """A new connection with its own transaction manager (one per thread)."""
        tm = transaction.TransactionManager(explicit=True)
        conn = self.db.open(transaction_manager=tm, at=self.at)
        self._connections.add(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, note: str | None = None) -> Iterator[Any]:
        """Run a block in one transaction; yields the root, commits on success."""
        conn = self.connection()
        tm = conn.transaction_manager
        try:
            with tm as txn:
                if note:
                    txn.note(note)
                yield conn.root()
        finally:
            conn.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A read-only look at the root; nothing is committed."""
        conn = self.connection()
        tm = conn.transaction_manager
        tm.begin()
        try:
            yield conn.root()
        finally:
            tm.abort()
            conn.close()

    def group_commit(self) -> SyncGroup | None:
        """Let commits share their fsync until `end_group_commit` (the kernel's mode;
        see `kernel.durability`). None when the storage syncs on its own (ZEO)."""
        storage = self.db.storage
        if isinstance(storage, GroupCommitFileStorage) and not self.read_only:
            return storage.defer_sync()
        return None

    def end_group_commit(self) -> None:
        """Sync what is pending and go back to one fsync per commit."""
        storage = self.db.storage
        if isinstance(storage, GroupCommitFileStorage):
            storage.resume_sync()

    # -- genesis -----------------------------------------------------------
    def genesis(self) -> None:
        """Create the root layout and install actor packages (idempotent)."""
        with self.transaction("genesis") as root:
            created = _install_root(root)
            prototypes.genesis.install(root["prototypes"])
            if system.install(root):
                created.append("system actor")
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                ep.load()(root, self.config)
            for name in root["actors"].keys():  # now, not at the first post: two steps
                mailbox.mailbox_for(root, name)  # posting at once would both create it
            if created:
                log.info("genesis created %s", ", ".join(created))

    # -- inspection --------------------------------------------------------
    def info(self) -> ImageInfo:
        """Counts of objects by class, storage size and last transaction."""
        storage = self.db.storage
        last = storage.lastTransaction()
        with self.reading() as root:
            created = root.get("batos", {}).get("created")
        return ImageInfo(
            location=self.describe_location(),
            objects_by_kind=_count_objects(storage),
            storage_bytes=_storage_bytes(self.directory, storage),
            last_transaction=_tid_time(last) if u64(last) else None,
            last_tid=last.hex(),
            created=dt.datetime.fromtimestamp(created, dt.UTC) if created else None,
            read_only=self.read_only,
        )

    def history(self, oid: int | bytes, size: int = 20) -> list[Revision]:
        """Committed revisions of one object, newest first."""
        raw = p64(oid) if isinstance(oid, int) else oid
        try:
            entries = self.db.history(raw, size=size)
        except (POSKeyError, KeyError) as exc:
            raise UnknownObject(u64(raw)) from exc
        return [_revision(entry) for entry in entries or ()]

    def describe_location(self) -> str:
        zeo = self.config["image.zeo"]
        return f"zeo {zeo} ({self.directory})" if zeo else str(self.directory / "Data.fs")


def parse_oid(text: str) -> int:
    """An oid from the CLI: `0x1a`, `1a` (hex) or a decimal with a leading `#`."""
    text = text.strip()
    try:
        if text.startswith("#"):
            return int(text[1:], 10)
        return int(text, 16)
    except ValueError as exc:
        raise UnknownObject(text) from exc


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 time (UTC when no zone is given) for `--at`."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ImageError(text, "expected an ISO-8601 time such as 2026-11-21T10:00") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _open_storage(directory: Path, cfg: config_mod.Config, *, read_only: bool,
                  create: bool) -> Any:
    zeo_address = cfg["image.zeo"]
    if zeo_address:
        return _open_zeo(directory, zeo_address, read_only=read_only)
    data_fs = directory / "Data.fs"
    if not data_fs.exists() and (read_only or not create):
        raise ImageError(str(directory), "no Data.fs here (run `batos init`)")
    if data_fs.exists():
        _note_torn_tail(data_fs, integrity.check_before_open(data_fs), read_only=read_only)
    try:
        return GroupCommitFileStorage(str(data_fs), blob_dir=str(directory / "blobs"),
                                      read_only=read_only)
    except LockError as exc:
        raise ImageLocked(str(directory)) from exc
    except (CorruptedError, FileStorageFormatError, UnicodeDecodeError) as exc:
        # The checks above should have caught it; ZODB's own word is the last line.
        raise DamagedImage(str(data_fs), -1, f"{type(exc).__name__}: {exc}") from exc
    except StorageError as exc:
        raise ImageError(str(directory), f"cannot open storage: {exc}") from exc


def _note_torn_tail(data_fs: Path, torn_at: int | None, *, read_only: bool) -> None:
    if torn_at is None:
        return
    if read_only:
        log.warning("%s ends in a transaction cut short by a crash (byte %d); it is "
                    "ignored here and set aside when a kernel next opens the image",
                    data_fs, torn_at)
    else:
        log.warning("%s ends in a transaction cut short by a crash (byte %d); ZODB "
                    "moves it aside to %s.trN", data_fs, torn_at, data_fs.name)


def _narrow_modes(directory: Path, *, read_only: bool) -> None:
    """Owner-only image: narrow what is wider, or say so when only reading it."""
    if read_only:
        wide = perms.too_wide(directory)
        if wide:
            log.warning("%d paths in %s let other users in (first: %s, %04o); the next "
                        "`batos serve` narrows them", len(wide), directory, wide[0][0],
                        wide[0][1])
        return
    narrowed = perms.secure(directory)
    if narrowed:
        log.warning("narrowed %d paths in %s to owner-only (first: %s, %04o -> %04o)",
                    len(narrowed), directory, narrowed[0].path, narrowed[0].before,
                    narrowed[0].after)


def _open_zeo(directory: Path, address: str, *, read_only: bool) -> Any:
    import ZEO  # imported only when configured: the local image needs no ZEO

    addr: Any = address
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit():
        addr = (host or "127.0.0.1", int(port))
    cache = directory / "blob-cache"
    cache.mkdir(exist_ok=True)
    return ZEO.client(addr, blob_dir=str(cache), shared_blob_dir=False,
                      read_only=read_only, wait_timeout=30)


def _install_root(root: Any) -> list[str]:
    created = []
    if "batos" not in root:
        root["batos"] = PersistentMapping(
            {"genesis_version": GENESIS_VERSION, "created": time.time()})
        created.append("batos")
    for name in ROOT_CONTAINERS:
        if name not in root:
            root[name] = OOBTree()
            created.append(name)
    if "metrics" not in root:
        root["metrics"] = Metrics()
        created.append("metrics")
    return created


def _count_objects(storage: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    next_oid = None
    while True:
        try:
            _oid, _tid, data, next_oid = storage.record_iternext(next_oid)
        except (AttributeError, POSKeyError):
            break
        module, klass = get_pickle_metadata(data)
        kind = f"{module}.{klass}" if module else klass
        counts[kind] = counts.get(kind, 0) + 1
        if next_oid is None:
            break
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _storage_bytes(directory: Path, storage: Any) -> int:
    try:
        size = int(storage.getSize())
    except (AttributeError, TypeError):
        size = 0
    blobs = directory / "blobs"
    if blobs.exists():
        size += sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file())
    return size


def _tid_time(tid: bytes) -> dt.datetime:
    from persistent.timestamp import TimeStamp

    return dt.datetime.fromtimestamp(TimeStamp(tid).timeTime(), dt.UTC)


def _revision(entry: dict[str, Any]) -> Revision:
    tid = entry.get("tid", b"")
    user = entry.get("user_name", b"")
    desc = entry.get("description", b"")
    return Revision(
        tid=tid.hex() if isinstance(tid, bytes) else str(tid),
        time=dt.datetime.fromtimestamp(float(entry.get("time", 0.0)), dt.UTC),
        user=user.decode("utf-8", "replace") if isinstance(user, bytes) else str(user),
        description=desc.decode("utf-8", "replace") if isinstance(desc, bytes) else str(desc),
        size=int(entry.get("size", 0)),
    )
