"""`batos repl`: an interactive Python session inside the living image.

Theory of operation
-------------------
The REPL opens the image and holds one connection whose transaction manager is
explicit: a transaction is begun at start, `commit(note)` commits it and
begins the next, `abort()` discards it and begins the next. Nothing is ever
committed implicitly; on exit whatever is uncommitted is aborted (and the user
is told). The image is opened read-only unless `--write` asks for read-write
(so looking never commits, not even ZODB's truncation of a torn tail); with
`--write` it is still read-only when a running kernel holds the FileStorage
lock, and `--at` always gives a read-only past view. Read-only, `commit()`
raises `ReadOnlyImage` instead of trying.

The namespace carries `root`, `actors`, `image` and a few helpers (`ls`,
`inspect`, `history`, `commit`, `abort`, `help_batos`). IPython is used when it
is installed and stdin is a terminal; `BATOS_REPL=plain` forces the standard
console. In either console a batos error prints as one line, not a traceback.
"""

from __future__ import annotations

import argparse
import code
import contextlib
import os
import reprlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistent import Persistent
from transaction.interfaces import NoTransaction
from ZODB.Connection import Connection

from kernel.errors import CommitFailed, ImageLocked, NotStored, ReadOnlyImage
from kernel.image import DEFAULT_IMAGE, Image, parse_time
from prototypes.errors import BatosError
from prototypes.method import Method
from prototypes.uvm import UvmObject, is_parent_name

LISTING_LIMIT = 100  # entries `ls` and `inspect` print before summarising the rest
HELPERS = (
    ("root", "the image's root mapping"),
    ("actors", 'root["actors"]'),
    ("image", "the open Image"),
    ("ls(obj=None)", "entries of a mapping/BTree or slots of a UvmObject (root by default)"),
    ("inspect(obj)", "slots, parents and method sources; or class, oid and attributes"),
    ("history(obj)", "committed revisions of a stored object: tid, time, description"),
    ('commit(note="")', "commit this session's changes, then begin a new transaction"),
    ("abort()", "discard this session's changes, then begin a new transaction"),
    ("help_batos()", "this list"),
)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 70


class ReplSession:
    """One open image, one connection, one explicit transaction at a time."""

    def __init__(self, image: Image, read_only_reason: str | None) -> None:
        self.image = image
        self.read_only_reason = read_only_reason
        self.conn: Connection = image.connection()
        self.tm = self.conn.transaction_manager
        self.tm.begin()

    def namespace(self) -> dict[str, Any]:
        """The names a user of the REPL starts with."""
        root = self.conn.root()
        return {
            "root": root, "actors": root.get("actors"), "image": self.image,
            "ls": self.ls, "inspect": inspect, "history": self.history,
            "commit": self.commit, "abort": self.abort, "help_batos": help_batos,
        }

    def pending(self) -> int:
        """How many objects this transaction has changed or added."""
        # The connection's own list of registered objects: there is no public accessor.
        return len(self.conn._registered_objects)

    def commit(self, note: str = "") -> None:
        """Commit this session's changes with `note`, then begin a new transaction."""
        if self.read_only_reason is not None:
            raise ReadOnlyImage(str(self.image.directory), self.read_only_reason)
        txn = self.tm.get()
        txn.user = "batos repl"
        if note:
            txn.note(note)
        before = self.image.db.lastTransaction()
        try:
            self.tm.commit()
        except Exception as exc:  # any failure of a hand-made commit is reported the same way
            self._restart()
            raise CommitFailed(str(self.image.directory), f"{type(exc).__name__}: {exc}") from exc
        self.tm.begin()
        after = self.image.db.lastTransaction()
        print(f"committed transaction {after.hex()}" if after != before
              else "nothing was changed; nothing committed")

    def abort(self) -> None:
        """Discard this session's changes, then begin a new transaction."""
        changed = self.pending()
        self._restart()
        print(f"discarded changes ({_count(changed, 'changed object')})"
              if changed else "nothing to discard")

    def ls(self, obj: Any = None) -> None:
        """List the entries of a mapping or BTree, or the slots of a UvmObject (root by default)."""
        ls(self.conn.root() if obj is None else obj)

    def history(self, obj: Any, size: int = 20) -> None:
        """Print the committed revisions of a stored object (or an int oid), newest first."""
        oid = obj if isinstance(obj, int) else _oid_of(obj)
        revisions = self.image.history(oid, size=size)
        print(f"history of {_label(obj)} (newest first)")
        for rev in revisions:
            when = rev.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            print(f"  {rev.tid}  {when}  {rev.description or '(no description)'}")

    def close(self) -> None:
        """Abort what is uncommitted (saying so), close the connection and the image."""
        changed = self.pending()
        if changed:
            print(f"discarding uncommitted changes ({_count(changed, 'changed object')})")
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        self.conn.close()
        self.image.close()

    def _restart(self) -> None:
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        self.tm.begin()


# -- opening -----------------------------------------------------------------------------


def open_session(image_dir: Path, at: str | None, *, write: bool = False) -> ReplSession:
    """Open the image for the REPL: read-only unless `write`; a past view; read-only
    when a kernel holds the lock."""
    if at is not None:
        when = parse_time(at)
        image = Image.open(image_dir, create=False, at=when)
        return ReplSession(image, f"a view of the image as it was at {when.isoformat()}")
    if not write:
        image = Image.open(image_dir, create=False, read_only=True)
        return ReplSession(image, "opened for reading (`batos repl --write` to change it)")
    try:
        return ReplSession(Image.open(image_dir, create=False), None)
    except ImageLocked:
        image = Image.open(image_dir, create=False, read_only=True)
        return ReplSession(image, "the image is held by a running kernel")


def banner(session: ReplSession) -> str:
    """The lines printed when the REPL starts."""
    location = session.image.describe_location()
    if session.read_only_reason is None:
        head = f"batos repl: living image {location} (read-write; commit() to keep changes)"
    else:
        head = (f"batos repl: living image {location}\n"
                f"READ-ONLY: {session.read_only_reason}, so this REPL is read-only: "
                "changes cannot be committed.")
        if session.image.at is None:
            head += "\nIt shows the image as it was when opened; reopen it to see newer commits."
    return f"{head}\n{_helper_lines()}"


def help_batos() -> None:
    """Print the REPL's helpers."""
    print(_helper_lines())


def _helper_lines() -> str:
    width = max(len(name) for name, _ in HELPERS)
    rows = [f"  {name.ljust(width)}  {what}" for name, what in HELPERS]
    return "helpers:\n" + "\n".join(rows)


# -- looking at objects ------------------------------------------------------------------


def ls(obj: Any) -> None:
    """List the entries of a mapping or BTree, or the slots of a UvmObject."""
    print(_label(obj))
    for line in _listing(obj):
        print(f"  {line}")


def inspect(obj: Any) -> None:
    """Print a UvmObject's slots, parents and method sources; else class, oid, attributes."""
    if isinstance(obj, UvmObject):
        _inspect_uvm(obj)
        return
    print(f"class: {type(obj).__module__}.{type(obj).__qualname__}")
    if isinstance(obj, Persistent):
        print(f"oid:   {_oid_text(obj)}")
    if _is_mapping(obj):
        print(f"{_count(len(obj), 'entry', 'entries')}:")
        lines = _mapping_lines(obj)
    else:
        print("attributes:")
        lines = _attribute_lines(obj)
    for line in lines:
        print(f"  {line}")


def _inspect_uvm(obj: UvmObject) -> None:
    print(f"{type(obj).__name__} oid {_oid_text(obj)}")
    parents = obj.parents()
    print("parents: " + (", ".join(_short_value(p) for p in parents) if parents else "(none)"))
    print("slots:")
    for line in _slot_lines(obj):
        print(f"  {line}")
    inherited = sorted({name for ancestor in obj.ancestors() for name in ancestor.slot_names()
                        if not is_parent_name(name)} - set(obj.slot_names()))
    if inherited:
        print("inherited: " + ", ".join(inherited))
    for name in obj.slot_names():
        value = obj.get_slot(name)
        if isinstance(value, Method):
            print(f"\n--- method {name} ---\n{value.source.rstrip()}")


def _listing(obj: Any) -> list[str]:
    if isinstance(obj, UvmObject):
        return _slot_lines(obj)
    if _is_mapping(obj):
        return _mapping_lines(obj)
    if isinstance(obj, list | tuple) or type(obj).__name__ == "PersistentList":
        return _limited(f"[{i}] {_short_value(v)}" for i, v in enumerate(obj))
    return _attribute_lines(obj)


def _slot_lines(obj: UvmObject) -> list[str]:
    names = obj.slot_names()
    width = max((len(n) for n in names), default=0)
    return _limited(f"{n.ljust(width)}  {_slot_value(n, obj.get_slot(n))}" for n in names)


def _slot_value(name: str, value: Any) -> str:
    if is_parent_name(name):
        return f"{_short_value(value)}  (parent)"
    if isinstance(value, Method):
        return f"method  {value.first_line()}"
    return _short_value(value)


def _mapping_lines(obj: Any) -> list[str]:
    return _limited(f"{_short.repr(k)}: {_short_value(v)}" for k, v in obj.items())


def _attribute_lines(obj: Any) -> list[str]:
    state = _state_of(obj)
    if isinstance(state, dict):
        return _limited(f"{k}: {_short_value(v)}" for k, v in state.items())
    return [_short_value(state)]


def _state_of(obj: Any) -> Any:
    if isinstance(obj, Persistent):
        obj._p_activate()
        state = obj.__getstate__()
        # Persistent classes with both __dict__ and __slots__ give (dict, slots).
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            return {**state[0], **(state[1] or {})}
        return state
    return getattr(obj, "__dict__", obj)


def _limited(lines: Any) -> list[str]:
    out: list[str] = []
    extra = 0
    for line in lines:
        if len(out) < LISTING_LIMIT:
            out.append(line)
        else:
            extra += 1
    if extra:
        out.append(f"... and {extra} more")
    return out


def _short_value(value: Any) -> str:
    if isinstance(value, UvmObject | Method):
        return repr(value)
    if isinstance(value, Persistent):
        kind = type(value).__name__
        size = f", {_count(len(value), 'entry', 'entries')}" if _is_mapping(value) else ""
        return f"<{kind} oid {_oid_text(value)}{size}>"
    return _short.repr(value)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _is_mapping(obj: Any) -> bool:
    return not isinstance(obj, UvmObject) and all(
        hasattr(obj, name) for name in ("keys", "items", "__len__"))


def _label(obj: Any) -> str:
    if isinstance(obj, int):
        return f"oid 0x{obj:x}"
    return _short_value(obj)


def _oid_text(obj: Persistent) -> str:
    oid = obj._p_oid
    return f"0x{int.from_bytes(oid, 'big'):x}" if oid is not None else "(not stored yet)"


def _oid_of(obj: Any) -> bytes:
    oid = getattr(obj, "_p_oid", None) if isinstance(obj, Persistent) else None
    if oid is None:
        raise NotStored(_label(obj))
    return oid


# -- consoles ----------------------------------------------------------------------------


class PlainConsole(code.InteractiveConsole):
    """The standard console, except that a batos error prints as one line."""

    def showtraceback(self) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, BatosError):
            self.write(f"error: {exc}\n")
        else:
            super().showtraceback()


def run_plain(ns: dict[str, Any], text: str, *, interactive: bool) -> None:
    """Run the standard `code` console on `ns`."""
    if interactive:
        _enable_readline(ns)
    with contextlib.suppress(SystemExit):  # `exit()` ends the console by raising it
        PlainConsole(locals=ns).interact(banner=text, exitmsg="")


def run_ipython(ns: dict[str, Any], text: str) -> None:
    """Run an IPython terminal shell on `ns`."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from IPython.terminal.ipapp import TerminalIPythonApp

    print(text)
    app = TerminalIPythonApp.instance(user_ns=ns, display_banner=False)
    try:
        app.initialize(argv=[])
        shell: Any = app.shell
        shell.set_custom_exc((BatosError,), _ipython_error)
        app.start()
    finally:
        TerminalInteractiveShell.clear_instance()
        TerminalIPythonApp.clear_instance()


def _ipython_error(shell: Any, etype: type, value: BaseException, tb: Any,
                   tb_offset: int | None = None) -> list[str]:
    print(f"error: {value}")
    return []


def _enable_readline(ns: dict[str, Any]) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:  # not every platform has readline; the console works without it
        return
    readline.set_completer(rlcompleter.Completer(ns).complete)
    readline.parse_and_bind("tab: complete")


def _choose_ipython(use_ipython: bool | None, interactive: bool) -> bool:
    if use_ipython is not None:
        return use_ipython
    if os.environ.get("BATOS_REPL", "").lower() == "plain" or not interactive:
        return False
    try:
        import IPython  # noqa: F401
    except ImportError:
        return False
    return True


def run_repl(image_dir: Path, at: str | None, *, write: bool = False,
             use_ipython: bool | None = None, stdin_is_tty: bool | None = None) -> int:
    """The body of `batos repl [--image DIR] [--at TIME] [--write]`; returns the exit status.

    Raises `ImageError` (a missing image, a bad `--at`) before any console starts.
    """
    interactive = sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty
    session = open_session(Path(image_dir), at, write=write)
    console: Callable[[dict[str, Any], str], None]
    if _choose_ipython(use_ipython, interactive):
        console = run_ipython
    else:
        def console(ns: dict[str, Any], text: str) -> None:
            run_plain(ns, text, interactive=interactive)
    try:
        console(session.namespace(), banner(session))
    finally:
        session.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m kernel.repl [--image DIR] [--at TIME]` (the CLI's `batos repl` is the same)."""
    parser = argparse.ArgumentParser(prog="python -m kernel.repl",
                                     description="An interactive session in the living image.")
    parser.add_argument("--image", type=Path,
                        default=Path(os.environ.get("BATOS_IMAGE", DEFAULT_IMAGE)))
    parser.add_argument("--at", default=None, help="ISO-8601 time: a read-only view as of then")
    parser.add_argument("--write", action="store_true", help="open read-write: commit() works")
    args = parser.parse_args(argv)
    try:
        return run_repl(args.image, args.at, write=args.write)
    except BatosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
