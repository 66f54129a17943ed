"""The batos wire protocol, sans-IO: bytes in, typed records out, and back.

Theory of operation
-------------------
Every message is one ZeroMQ multipart message. On the kernel's ROUTER socket
it reads ``[identity, b"", VERSION, payload]``; a DEALER peer sends and
receives ``[b"", VERSION, payload]``. The payload is one msgpack map with
string keys, always holding ``"kind"`` (which record) and ``"id"`` (the
sender's message id, the correlation and idempotency key).

Each kind is one frozen record class (``KINDS`` maps names to classes). The
inbound boundary is ``decode``: it unpacks under ``Limits``, walks the whole
tree once (wire value types, string keys, sizes, depth), then checks the
record's own fields (types, names, required, no unknown fields) and returns
the record. Anything else it meets becomes a ``ProtocolError`` child with a
stable ``code`` -- never another exception -- carrying the message id and the
peer identity when they could be read, so the caller can route a typed
``error`` reply. ``encode`` runs the same checks, so the kernel never sends
what a peer would reject.

This package moves no bytes: it imports neither zmq nor ZODB. Its modules:
``fields`` (constants, limits, ids, field checks), ``records`` (one record per
kind, the direction tables), ``errors`` (codes, the protocol error tree, error
records) and ``codec`` (the tree walk, decode / encode, frames). The socket loop
calls it; role checks use the direction tables at the bottom.
"""

from __future__ import annotations

from kernel.wire.codec import (
    decode,
    encode,
    parse_peer_frames,
    peer_frames,
    router_frames,
    split_router_frames,
)
from kernel.wire.errors import (
    ERROR_MEANINGS,
    BadField,
    BadFrame,
    BadKind,
    BadPayload,
    BadVersion,
    ErrorCode,
    ProtocolError,
    TooLarge,
    error_code_of,
    error_reply,
)
from kernel.wire.fields import (
    DEFAULT_LIMITS,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_LIVENESS,
    MAX_HEARTBEAT_MS,
    MAX_ID_LEN,
    VERSION,
    Attempt,
    Check,
    Flag,
    HeartbeatMs,
    Limits,
    MsgId,
    Name,
    Names,
    OptMsgId,
    OptStr,
    Seconds,
    Str,
    Text,
    WireList,
    WireMap,
    WireValue,
    new_id,
)
from kernel.wire.records import (
    ACTOR_KINDS,
    CLIENT_KINDS,
    KERNEL_TO_ACTOR,
    KERNEL_TO_CLIENT,
    KINDS,
    Accepted,
    Cancel,
    Deliver,
    Error,
    Event,
    Heartbeat,
    Message,
    Mission,
    Ping,
    Pong,
    Record,
    Register,
    Reply,
    Result,
    Send,
    Status,
    Unregister,
    Watch,
)

__all__ = [
    "ACTOR_KINDS",
    "CLIENT_KINDS",
    "DEFAULT_LIMITS",
    "ERROR_MEANINGS",
    "HEARTBEAT_INTERVAL_MS",
    "HEARTBEAT_LIVENESS",
    "KERNEL_TO_ACTOR",
    "KERNEL_TO_CLIENT",
    "KINDS",
    "MAX_HEARTBEAT_MS",
    "MAX_ID_LEN",
    "VERSION",
    "Accepted",
    "Attempt",
    "BadField",
    "BadFrame",
    "BadKind",
    "BadPayload",
    "BadVersion",
    "Cancel",
    "Check",
    "Deliver",
    "Error",
    "ErrorCode",
    "Event",
    "Flag",
    "Heartbeat",
    "HeartbeatMs",
    "Limits",
    "Message",
    "Mission",
    "MsgId",
    "Name",
    "Names",
    "OptMsgId",
    "OptStr",
    "Ping",
    "Pong",
    "ProtocolError",
    "Record",
    "Register",
    "Reply",
    "Result",
    "Seconds",
    "Send",
    "Status",
    "Str",
    "Text",
    "TooLarge",
    "Unregister",
    "Watch",
    "WireList",
    "WireMap",
    "WireValue",
    "decode",
    "encode",
    "error_code_of",
    "error_reply",
    "new_id",
    "parse_peer_frames",
    "peer_frames",
    "router_frames",
    "split_router_frames",
]
