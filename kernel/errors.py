"""Errors of the kernel: one root, typed children carrying their data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from prototypes.errors import BatosError


class KernelError(BatosError):
    """Root of the kernel's errors."""


# -- image, configuration, mailboxes and steps -------------------------------


class ConfigError(KernelError):
    """A configuration key is unknown or has the wrong type."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config {key}: {problem}")
        self.key = key
        self.problem = problem


class ConfigSyntaxError(ConfigError):
    """The configuration file at `path` is not valid TOML; nothing was loaded."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(path, f"not valid TOML: {detail}")
        self.path = path
        self.detail = detail


class ImageError(KernelError):
    """The image cannot be opened or used as asked."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"image {where}: {problem}")
        self.where = where
        self.problem = problem


class ImageMissing(ImageError):
    """No image exists at `where`, and the caller did not ask to create one."""

    def __init__(self, where: str) -> None:
        super().__init__(where, "no image here (run `batos init`)")


class ImageLocked(ImageError):
    """Another process (usually a running kernel) holds the image for writing."""

    def __init__(self, where: str) -> None:
        super().__init__(where, "locked by another process (is a kernel running?)")


class InsecureImage(ImageError):
    """A path in the image is readable or writable by other users and cannot be narrowed."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(path, f"mode {mode:04o} lets other users in and this process "
                               "cannot narrow it: chown it to the image's owner, or "
                               f"`chmod go-rwx {path}`")
        self.path = path
        self.mode = mode


class DamagedImage(ImageError):
    """`Data.fs` is not a well-formed FileStorage at `position`: opening it would lose or
    invent data, so it is refused as a whole."""

    HINT = ("the file was left as it is; run `batos image verify` for every problem and "
            "`batos image recover --out NEWDIR` to write a repaired copy")

    def __init__(self, where: str, position: int, problem: str) -> None:
        at = f" at byte {position}" if position >= 0 else ""  # -1: ZODB did not say where
        super().__init__(where, f"damaged{at}: {problem}; {self.HINT}")
        self.position = position
        self.damage = problem


class UnknownObject(KernelError):
    """No object with this oid exists in the image."""

    def __init__(self, oid: int | str) -> None:
        shown = f"0x{oid:x}" if isinstance(oid, int) else oid
        super().__init__(f"no object with oid {shown}")
        self.oid = oid


class BlobError(KernelError):
    """A file could not be stored in, or read from, a blob."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"blob {what}: {problem}")
        self.what = what


class Overloaded(KernelError):
    """An actor's mailbox is full; the message was not accepted."""

    def __init__(self, actor: str, capacity: int) -> None:
        super().__init__(f"mailbox of {actor!r} is full ({capacity} pending)")
        self.actor = actor
        self.capacity = capacity


class MessageGone(KernelError):
    """A pending message is no longer in its mailbox (already consumed)."""

    def __init__(self, actor: str, key: str) -> None:
        super().__init__(f"message {key} is not pending for {actor!r}")
        self.actor = actor
        self.key = key


class UnknownActor(KernelError):
    """No actor of this name exists in the image (or is attached)."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"no actor named {actor!r}")
        self.actor = actor


class UnknownSelector(KernelError):
    """The actor has no handler for this selector."""

    def __init__(self, actor: str, selector: str) -> None:
        super().__init__(f"actor {actor!r} does not handle {selector!r}")
        self.actor = actor
        self.selector = selector


class NotLearned(UnknownSelector):
    """A generative actor's learner wrote no method the guardian accepted.

    `reasons` holds the guardian's verdict on each attempt. `record`, when set,
    is run by the step runner in a transaction of its own after the step was
    aborted: what must be remembered about the refusal (counters, the refused
    sources) although the image is otherwise left as it was.
    """

    code = "does_not_understand"

    def __init__(self, actor: str, selector: str, reasons: list[str],
                 record: Callable[[Any], None] | None = None) -> None:
        KernelError.__init__(self, f"actor {actor!r} does not understand {selector!r} and "
                             f"learned no method: {'; '.join(reasons) or 'no attempt'}")
        self.actor = actor
        self.selector = selector
        self.reasons = list(reasons)
        self.record = record


class StepFailed(KernelError):
    """A step raised; its transaction was doomed and aborted. `error_type` names the
    class of what the handler raised (the exception itself is `__cause__`, in-process)."""

    def __init__(self, actor: str, selector: str, message_id: str, cause: str,
                 error_type: str = "") -> None:
        super().__init__(f"step {actor}.{selector} ({message_id}) failed: {cause}")
        self.actor = actor
        self.selector = selector
        self.message_id = message_id
        self.cause = cause
        self.error_type = error_type


class QueryWrote(KernelError):
    """A `@query` handler posted, emitted or changed something (a query only reads);
    what it changed was aborted."""

    def __init__(self, actor: str, selector: str) -> None:
        super().__init__(f"query {actor}.{selector} tried to write; a query only reads")
        self.actor = actor
        self.selector = selector


class RetriesExhausted(StepFailed):
    """A step kept hitting write conflicts and ran out of attempts."""

    def __init__(self, actor: str, selector: str, message_id: str, attempts: int) -> None:
        super().__init__(actor, selector, message_id, f"conflicts on all {attempts} attempts",
                         "ConflictError")
        self.attempts = attempts


class NameTaken(KernelError):
    """Another live peer, under another key, already serves this actor name."""

    code = "forbidden"

    def __init__(self, name: str) -> None:
        super().__init__(f"actor name {name!r} is served by another key")
        self.name = name


class NameReserved(KernelError):
    """An external actor asked for a name an actor in the image already has."""

    code = "forbidden"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is an actor in the image; pick another name")
        self.name = name


class EndpointInUse(KernelError):
    """`bind` found a live kernel answering on this ipc socket file."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"{endpoint}: another kernel is serving this socket; "
                         "stop it first or bind another endpoint")
        self.endpoint = endpoint


class CurveKeysMissing(KernelError):
    """A tcp endpoint needs the kernel's CURVE keypair, and `directory` has none."""

    def __init__(self, directory: object) -> None:
        super().__init__(f"tcp endpoints require CURVE keys in {directory}: "
                         "run `batos keys init`")
        self.directory = directory


class StepInterrupted(KernelError):
    """A step gave up because the kernel is stopping; its message stays pending and
    runs again at the next start."""

    code = "shutting_down"  # what a client would hear; its message runs at the next start

    def __init__(self, actor: str, selector: str, what: str) -> None:
        super().__init__(f"step {actor}.{selector} interrupted by the kernel stopping "
                         f"({what}); it runs again at the next start")
        self.actor = actor
        self.selector = selector
        self.what = what


class InterruptedTooOften(StepFailed):
    """A message was interrupted by stops more times than `steps.max_interruptions`:
    it went to the dead letters instead of starting a third, fourth... time."""

    def __init__(self, actor: str, selector: str, message_id: str, times: int) -> None:
        super().__init__(actor, selector, message_id,
                         f"interrupted by {times} stops (steps.max_interruptions); "
                         "moved to the dead letters")
        self.times = times


# -- several kernels on one image (kernel.leases) ----------------------------


class LeaseError(KernelError):
    """Root of the errors about actor leases (several kernels sharing one image)."""


class NotLeaseHolder(LeaseError):
    """A step that would change `actor` ran on a kernel that does not hold its lease:
    it was doomed and nothing was written; its message (if any) stays pending for
    the holder. A client may send again, to the holder or once this kernel holds it."""

    code = "unavailable"

    def __init__(self, actor: str, kernel: str, holder: str | None) -> None:
        super().__init__(f"kernel {kernel!r} does not hold the lease of {actor!r} "
                         f"(held by {holder or 'nobody'})")
        self.actor = actor
        self.kernel = kernel
        self.holder = holder


class KernelIdInUse(LeaseError):
    """Another live process renews the record of this kernel id: two kernels were
    given the same `kernel.id`."""

    def __init__(self, kernel: str, host: str, pid: int) -> None:
        super().__init__(f"kernel id {kernel!r} is in use by pid {pid} on {host} "
                         "(give each kernel its own kernel.id)")
        self.kernel = kernel
        self.host = host
        self.pid = pid


class ImageUnavailable(KernelError):
    """The shared image (its ZEO server) cannot be reached; no work is taken in
    until it is back. Retry with the same id."""

    code = "unavailable"

    def __init__(self, where: str) -> None:
        super().__init__(f"the image at {where} is unreachable; retry when it is back")
        self.where = where


# -- the REPL -----------------------------------------------------------------


class ReadOnlyImage(ImageError):
    """The image is open read-only (a kernel holds it, or it is a past view): no commits."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, f"read-only ({reason}); changes cannot be committed")
        self.reason = reason


class CommitFailed(ImageError):
    """A commit asked for by hand failed; its transaction was aborted."""

    def __init__(self, where: str, cause: str) -> None:
        super().__init__(where, f"commit failed, changes discarded: {cause}")
        self.cause = cause


class NotStored(KernelError):
    """The value is not an object stored in the image (no oid), so it has no history."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not stored in the image (commit it first)")
        self.what = what


class AtOutOfRange(ImageError):
    """`--at` names a time before the image's first transaction or after its last."""

    def __init__(self, where: str, when: dt.datetime, first: dt.datetime | None,
                 last: dt.datetime | None) -> None:
        span = ("the image has no transactions" if first is None or last is None else
                f"its history runs from {_iso(first)} to {_iso(last)}")
        side = "before the first" if first is not None and when < first else "after the last"
        super().__init__(where, f"--at {_iso(when)} is {side} transaction; {span}")
        self.when = when
        self.first = first
        self.last = last


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
