"""The socket loop's counters: every documented one present from the start, at 0.

`status` reports them under `kernel` (PROTOCOL.md section 4.6). Each name is
fixed here, so a client can read any of them before the first event counted
it; `bad.<code>` exists for every protocol error code.
"""

from __future__ import annotations

from collections import Counter

from kernel import wire

# name -> what it counts (PROTOCOL.md lists the same table)
DOCUMENTED: dict[str, str] = {
    "frames_in": "multipart messages received",
    "frames_out": "multipart messages sent",
    "forbidden": "messages refused for the sender's role or ownership",
    "undeliverable": "answers whose peer had gone or whose queue was full",
    "stale_replies": "actor replies for a delivery not in flight at that peer",
    "duplicates_ignored": "steps that found their message consumed already",
    "resends": "messages resent with a known id (joined or replayed, never rerun)",
    "actors_dead": "external actors declared dead after missed heartbeats",
    "disconnects": "connections that closed",
    "answers_dropped": "answers for a connection that has gone",
    "internal_errors": "kernel bugs caught in the socket loop",
    "log_lines_suppressed": "repeated log lines about peers left out",
    "bad.unroutable": "bad frames without a usable routing id",
    **{f"bad.{code}": f"inbound messages refused with {code}"
       for code in (wire.ErrorCode.BAD_FRAME, wire.ErrorCode.BAD_VERSION,
                    wire.ErrorCode.TOO_LARGE, wire.ErrorCode.BAD_PAYLOAD,
                    wire.ErrorCode.BAD_KIND, wire.ErrorCode.BAD_FIELD)},
}


class KernelCounters:
    """In-memory counters of the socket loop (frames, bad input, forbidden...)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter(dict.fromkeys(DOCUMENTED, 0))

    def incr(self, name: str, amount: int = 1) -> None:
        self._counts[name] += amount

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)
