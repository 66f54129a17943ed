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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistent import Persistent
from transaction.interfaces import NoTransaction
from ZODB.Connection import Connection

from kernel.errors import CommitFailed, ImageLocked, ReadOnlyImage
from kernel.image import DEFAULT_IMAGE, Image, parse_time
from kernel.leases import lease_lines
from kernel.repl_show import counted, describe, inspect, label_of, learn_names, ls, oid_of
from kernel.repl_tools import (
    ReadOnlyWarning,
    check_at,
    install_ipython_completer,
    make_send,
    plain_completer,
)
from prototypes.errors import BatosError

HELPERS = (
    ("root", "the image's root mapping"),
    ("actors", 'root["actors"]'),
    ("image", "the open Image"),
    ("ls(obj=None)", "entries of a mapping/BTree or slots of a UvmObject (root by default)"),
    ("inspect(obj)", "slots, parents and method sources; or class, oid and attributes"),
    ("history(obj)", "committed revisions of a stored object: tid, time, description"),
    ("send(actor, selector, *args)", "a message through the running kernel; its result"),
    ('commit(note="")', "commit this session's changes, then begin a new transaction"),
    ("abort()", "discard this session's changes, then begin a new transaction"),
    ("leases()", "which kernel runs which actor (several kernels on one ZEO image)"),
    ("help_batos()", "this list"),
)



class ReplSession:
    """One open image, one connection, one explicit transaction at a time."""

    def __init__(self, image: Image, read_only_reason: str | None) -> None:
        self.image = image
        self.read_only_reason = read_only_reason
        self.conn: Connection = image.connection()
        self.tm = self.conn.transaction_manager
        self.tm.begin()
        self.guard = None if read_only_reason is None else \
            ReadOnlyWarning(self.conn, read_only_reason)
        learn_names(self.conn.root())

    def namespace(self) -> dict[str, Any]:
        """The names a user of the REPL starts with."""
        root = self.conn.root()
        return {
            "root": root, "actors": root.get("actors"), "image": self.image,
            "ls": self.ls, "inspect": inspect, "history": self.history,
            "commit": self.commit, "abort": self.abort, "help_batos": help_batos,
            "leases": self.leases,
            "send": make_send(self.image.directory),
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
        print(f"discarded changes ({counted(changed, 'changed object')})"
              if changed else "nothing to discard")

    def ls(self, obj: Any = None) -> None:
        """List the entries of a mapping or BTree, or the slots of a UvmObject (root by default)."""
        ls(self.conn.root() if obj is None else obj)

    def leases(self) -> None:
        """Print which kernel runs which actor (several kernels on one ZEO image)."""
        print("\n".join(lease_lines(self.conn.root())))

    def history(self, obj: Any, size: int = 20) -> None:
        """Print the committed revisions of a stored object (or an int oid), newest first."""
        oid = obj if isinstance(obj, int) else oid_of(obj)
        revisions = self.image.history(oid, size=size)
        print(f"history of {label_of(obj)} (newest first)")
        for rev in revisions:
            when = rev.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            print(f"  {rev.tid}  {when}  {rev.description or '(no description)'}")

    def close(self) -> None:
        """Abort what is uncommitted (saying so), close the connection and the image."""
        changed = self.pending()
        if changed:
            print(f"discarding uncommitted changes ({counted(changed, 'changed object')})")
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        self.conn.close()
        self.image.close()

    def _restart(self) -> None:
        with contextlib.suppress(NoTransaction):
            self.tm.abort()
        self.tm.begin()
        if self.guard is not None:
            self.guard.rearm()


# -- opening -----------------------------------------------------------------------------


def open_session(image_dir: Path, at: str | None, *, write: bool = False) -> ReplSession:
    """Open the image for the REPL: read-only unless `write`; a past view; read-only
    when a kernel holds the lock."""
    if at is not None:
        when = parse_time(at)
        image = Image.open(image_dir, create=False, at=when)
        try:
            check_at(image.db.storage, str(image_dir), when)
        except BaseException:
            image.close()
            raise
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
    shown = sys.displayhook
    sys.displayhook = _displayhook
    try:
        with contextlib.suppress(SystemExit):  # `exit()` ends the console by raising it
            PlainConsole(locals=ns).interact(banner=text, exitmsg="")
    finally:
        sys.displayhook = shown


def _displayhook(value: Any) -> None:
    """Values by name and kind, epoch floats with their date (`repl_show.describe`)."""
    if value is None:
        return
    import builtins

    builtins._ = value  # type: ignore[attr-defined]
    print(describe(value))


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
        plain = shell.display_formatter.formatters["text/plain"]
        for kind in (Persistent, float):
            plain.for_type(kind, lambda obj, printer, cycle: printer.text(describe(obj)))
        install_ipython_completer(shell, ns)
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
    except ImportError:  # not every platform has readline; the console works without it
        return
    readline.set_completer(plain_completer(ns))
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
