"""The REPL's helpers around the objects: a checked `--at`, key completion, the
read-only warning and `send`.

- `check_at`: a past view must fall inside the image's history; outside it,
  `AtOutOfRange` names the time asked for and the first and last
  transactions' times (ZODB itself fails with `POSKeyError` before the first
  and `ValueError` after the last).
- Completion: after `expr[` or `expr['par`, TAB offers the keys of the
  mapping or BTree `expr` names (a BTree is read from `par` on, not scanned),
  and nothing else: no IPython magics, no file names. `expr` is evaluated
  only when it is names, attributes and constant subscripts (`root["a"].b`),
  never a call. Slot names complete after a dot because `UvmObject.__dir__`
  lists them.
- `ReadOnlyWarning`: in a read-only session the first change made prints one
  warning, since it cannot be committed (ZODB would say so only at commit).
- `make_send`: `send(actor, selector, *args)` through the kernel serving the
  image, as `batos send` does; no kernel gives the CLI's typed one-line error.
"""

from __future__ import annotations

import ast
import datetime as dt
import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernel.errors import AtOutOfRange

KEYS_SHOWN = 200  # completions offered at most
SCANNED = 5000  # keys read from a mapping that cannot start at a prefix

_KEY_CONTEXT = re.compile(
    r"""(?P<expr>[A-Za-z_][\w.]*(?:\[(?:'[^']*'|"[^"]*"|\d+)\])*)\[(?P<quote>['"]?)"""
    r"""(?P<partial>[^'"\]\[]*)$""")


class _Unsafe(Exception):
    """An expression the completer will not evaluate."""


# -- --at ----------------------------------------------------------------------------


def transaction_span(storage: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The times of the storage's first and last transactions (None, None: empty)."""
    from persistent.timestamp import TimeStamp

    def when(tid: bytes) -> dt.datetime:
        return dt.datetime.fromtimestamp(TimeStamp(tid).timeTime(), dt.UTC)

    records = storage.iterator()
    try:
        first = next(iter(records), None)
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()
    if first is None:
        return None, None
    return when(first.tid), when(storage.lastTransaction())


def check_at(storage: Any, where: str, at: dt.datetime) -> None:
    """`AtOutOfRange` unless `at` falls within the storage's history."""
    first, last = transaction_span(storage)
    if first is None or last is None or at < first or at > last:
        raise AtOutOfRange(where, at, first, last)


# -- completion ----------------------------------------------------------------------


def key_completions(ns: dict[str, Any], before_cursor: str) -> tuple[str, list[str]] | None:
    """(partial, keys) when the cursor is inside `expr[...`; None otherwise."""
    found = _KEY_CONTEXT.search(before_cursor)
    if found is None:
        return None
    try:
        target = _evaluate(ast.parse(found["expr"], mode="eval").body, ns)
    except (SyntaxError, _Unsafe, Exception):
        return None
    if not all(hasattr(target, name) for name in ("keys", "__getitem__")):
        return None
    partial = found["partial"]
    return partial, _keys_starting(target, partial)


def _keys_starting(target: Any, partial: str) -> list[str]:
    try:  # a BTree with str keys starts at the prefix
        keys = target.keys(min=partial) if partial else target.keys()
        ordered = True
    except TypeError:  # a dict or PersistentMapping: read some, keep those that fit
        keys, ordered = itertools.islice(target.keys(), SCANNED), False
    out = []
    for key in keys:
        if not isinstance(key, str):
            continue
        if not key.startswith(partial):
            if ordered and key > partial:
                break
            continue
        out.append(key)
        if len(out) >= KEYS_SHOWN:
            break
    return sorted(out)


def _evaluate(node: ast.expr, ns: dict[str, Any]) -> Any:
    match node:
        case ast.Name(id=name):
            return ns[name]
        case ast.Attribute(value=value, attr=attr) if not attr.startswith("_"):
            return getattr(_evaluate(value, ns), attr)
        case ast.Subscript(value=value, slice=ast.Constant(value=key)):
            return _evaluate(value, ns)[key]
        case _:
            raise _Unsafe(ast.dump(node))


def plain_completer(ns: dict[str, Any]) -> Callable[[str, int], str | None]:
    """A readline completer: mapping keys inside `expr[`, else rlcompleter's names."""
    import readline
    import rlcompleter

    names = rlcompleter.Completer(ns)
    keys: list[str] | None = None  # this completion's keys; None: complete names

    def complete(text: str, state: int) -> str | None:
        nonlocal keys
        if state == 0:
            found = key_completions(ns, readline.get_line_buffer()[:readline.get_endidx()])
            keys = None if found is None else found[1]
        if keys is None:
            return names.complete(text, state)
        return keys[state] if state < len(keys) else None

    return complete


def install_ipython_completer(shell: Any, ns: dict[str, Any]) -> None:
    """Add the key matcher to IPython; inside `expr[` it suppresses every other one."""
    from IPython.core.completer import CompletionContext, SimpleCompletion, context_matcher

    @context_matcher()
    def batos_keys(context: CompletionContext) -> dict[str, Any]:
        before = context.full_text.splitlines()[context.cursor_line][:context.cursor_position] \
            if context.full_text else ""
        keys = key_completions(ns, before)
        if keys is None:
            return {"completions": [], "suppress": False}
        return {"completions": [SimpleCompletion(text=k, type="key") for k in keys[1]],
                "suppress": True, "matched_fragment": keys[0]}

    shell.Completer.custom_matchers.append(batos_keys)


# -- read-only and send --------------------------------------------------------------


class ReadOnlyWarning:
    """Wraps a connection's `register` (called at an object's first change in a
    transaction) to warn once per transaction that the change cannot be kept."""

    def __init__(self, conn: Any, reason: str) -> None:
        self.reason = reason
        self.warned = False
        self._register = conn.register
        conn.register = self.register

    def register(self, obj: Any) -> None:
        if not self.warned:
            self.warned = True
            print(f"warning: read-only session ({self.reason}): this change cannot be "
                  "committed; abort() discards it", file=sys.stderr)
        self._register(obj)

    def rearm(self) -> None:
        self.warned = False


def make_send(image_dir: Path) -> Callable[..., Any]:
    """`send(actor, selector, *args, timeout=10.0)` through the image's kernel."""
    def send(actor: str, selector: str, *args: Any, timeout: float = 10.0) -> Any:
        """Send a message to an actor through the running kernel; its step's result."""
        from kernel.client import Client, endpoint_for
        from kernel.endpoints import probe

        address = endpoint_for(image_dir)
        probe(address)  # no kernel: a typed one-line error, at once
        with Client(address, timeout=timeout) as client:
            return client.send(actor, selector, *args)

    return send
