"""kernel.wire: round trips, one trigger per error code, limits, and fuzzing."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import wire
from kernel.errors import (
    KernelError,
    NameReserved,
    NameTaken,
    NotLearned,
    Overloaded,
    StepFailed,
    UnknownActor,
    UnknownSelector,
)
from kernel.wire import (
    ACTOR_KINDS,
    CLIENT_KINDS,
    DEFAULT_LIMITS,
    KERNEL_TO_ACTOR,
    KERNEL_TO_CLIENT,
    KINDS,
    VERSION,
    Accepted,
    BadField,
    BadFrame,
    BadVersion,
    Cancel,
    Deliver,
    Error,
    ErrorCode,
    Event,
    Heartbeat,
    Limits,
    Mission,
    Ping,
    Pong,
    ProtocolError,
    Record,
    Register,
    Reply,
    Result,
    Send,
    Status,
    Unregister,
    Watch,
    decode,
    encode,
    error_reply,
    new_id,
    parse_peer_frames,
    peer_frames,
    router_frames,
    split_router_frames,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def nested(depth: int) -> Any:
    """A value that is ``depth`` lists deep."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def send_with(**fields: Any) -> bytes:
    """A ``send`` payload (id ``m1``) with some fields replaced or added."""
    return pack({"kind": "send", "id": "m1", "actor": "echo", "selector": "say"} | fields)


# -- round trips ----------------------------------------------------------------

SAMPLES: list[Record] = [
    Ping(id="p1"),
    Mission(id="m1", text="What is 2+2?", options={"budget": "cpu", "scale": 0.5}),
    Send(id="s1", actor="echo", selector="say", args=[1, "two", None], kwargs={"loud": True}),
    Watch(id="w1", ref="m1"),
    Cancel(id="c1", ref="m1"),
    Status(id="q1"),
    Status(id="q2", ref="m1"),
    Accepted(id="k1", ref="m1"),
    Event(id="k2", ref="m1", event="chunk", data={"pass": "draft", "text": "Fo", "seq": 0}),
    Result(id="k3", ref="m1", value={"answer": "4", "confidence": 0.9, "raw": b"\x00\xff"}),
    Result(id="k4", ref="s1"),
    Error(id="k5", code="not_found", message="no such mission", ref="w9", details={"x": [1]}),
    Pong(id="k6", time=1_700_000_000.25, ref="p1"),
    Register(id="r1", name="ocr.v2", selectors=["read", "read_page"], heartbeat_ms=500),
    Heartbeat(id="h1"),
    Reply(id="a1", ref="d1", ok=True, value=[-(2**63), 2**64 - 1, math.inf]),
    Reply(id="a2", ref="d1", ok=False, error="ValueError: bad page"),
    Unregister(id="u1", name="ocr.v2"),
    Deliver(id="d1", actor="ocr.v2", selector="read", args=[b"png"], kwargs={}, attempt=2),
]


def test_samples_cover_every_kind() -> None:
    assert {type(msg).kind for msg in SAMPLES} == set(KINDS)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: f"{m.kind}-{m.id}")
def test_round_trip(msg: Record) -> None:
    assert decode(encode(msg)) == msg
    assert split_router_frames(router_frames(b"\x00peer", msg)) == (b"\x00peer", msg)
    assert parse_peer_frames(peer_frames(msg)) == msg


def test_frame_layout() -> None:
    msg = Ping(id="p1")
    payload = encode(msg)
    assert router_frames(b"who", msg) == [b"who", b"", b"batos/1", payload]
    assert peer_frames(msg) == [b"", b"batos/1", payload]
    assert msgpack.unpackb(payload) == {"kind": "ping", "id": "p1"}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (pack({"kind": "send", "id": "s", "actor": "a", "selector": "b"}),
         Send(id="s", actor="a", selector="b", args=[], kwargs={})),
        (pack({"kind": "register", "id": "r", "name": "n", "selectors": []}),
         Register(id="r", name="n", selectors=[], heartbeat_ms=wire.HEARTBEAT_INTERVAL_MS)),
        (pack({"kind": "deliver", "id": "d", "actor": "a", "selector": "b"}),
         Deliver(id="d", actor="a", selector="b", attempt=1)),
        (pack({"kind": "status", "id": "q", "ref": None}), Status(id="q", ref=None)),
        (pack({"kind": "pong", "id": "p", "time": 3}), Pong(id="p", time=3.0)),
        (pack({"kind": "send", "id": "s", "actor": "a", "selector": "b", "args": nested(31)}),
         Send(id="s", actor="a", selector="b", args=nested(31))),
    ],
    ids=["send-defaults", "register-defaults", "deliver-defaults", "status-nil", "pong-int-time",
         "depth-32"],
)  # fmt: skip
def test_decode_fills_defaults_and_accepts_edges(payload: bytes, expected: Record) -> None:
    assert decode(payload) == expected


def test_pong_time_is_float() -> None:
    msg = decode(pack({"kind": "pong", "id": "p", "time": 3}))
    assert isinstance(msg, Pong)
    assert isinstance(msg.time, float)


# -- one trigger per error code: payloads -------------------------------------------

ONE_MIB = 1 << 20
DECODE_ERRORS: list[tuple[str, Any, ErrorCode, str | None]] = [
    ("oversize", b"\xc0" * (ONE_MIB + 1), ErrorCode.TOO_LARGE, None),
    ("empty", b"", ErrorCode.BAD_PAYLOAD, None),
    ("not-msgpack", b"\xc1", ErrorCode.BAD_PAYLOAD, None),
    ("truncated", pack({"kind": "ping", "id": "p"})[:-1], ErrorCode.BAD_PAYLOAD, None),
    ("trailing-bytes", pack({"kind": "ping", "id": "p"}) + b"\x00", ErrorCode.BAD_PAYLOAD, None),
    ("not-bytes", "ping", ErrorCode.BAD_PAYLOAD, None),
    ("not-a-map", pack(["ping", "p"]), ErrorCode.BAD_PAYLOAD, None),
    ("bad-utf8", b"\x81\xa4kind\xa2\xff\xfe", ErrorCode.BAD_PAYLOAD, None),
    ("int-key", pack({"kind": "ping", "id": "p", 1: 2}), ErrorCode.BAD_PAYLOAD, None),
    ("nested-int-key", send_with(kwargs={1: 2}), ErrorCode.BAD_PAYLOAD, None),
    ("bytes-key", send_with(kwargs={b"k": 1}), ErrorCode.BAD_PAYLOAD, "kwargs"),
    ("deep-bytes-key", send_with(args=[0, {"a": {b"k": 1}}]), ErrorCode.BAD_PAYLOAD, "args[1].a"),
    ("ext-type", send_with(args=[msgpack.ExtType(5, b"x")]), ErrorCode.BAD_PAYLOAD, None),
    ("timestamp", send_with(args=[msgpack.Timestamp(0)]), ErrorCode.BAD_PAYLOAD, "args[0]"),
    ("depth-33", send_with(args=nested(32)), ErrorCode.TOO_LARGE, "args" + "[0]" * 31),
    ("depth-2000", b"\x91" * 2000 + b"\xc0", ErrorCode.TOO_LARGE, None),
    ("long-string", send_with(args=["x" * (256 * 1024 + 1)]), ErrorCode.TOO_LARGE, "args[0]"),
    ("long-key", send_with(kwargs={"k" * (256 * 1024 + 1): 1}), ErrorCode.TOO_LARGE, "kwargs"),
    ("many-items", send_with(args=[0] * 10_001), ErrorCode.TOO_LARGE, "args"),
    ("many-keys", send_with(kwargs={f"k{i}": i for i in range(10_001)}), ErrorCode.TOO_LARGE,
     "kwargs"),
    ("unknown-kind", pack({"kind": "launch", "id": "m1"}), ErrorCode.BAD_KIND, None),
    ("missing-kind", pack({"id": "m1"}), ErrorCode.BAD_FIELD, "kind"),
    ("kind-not-str", pack({"kind": 1, "id": "m1"}), ErrorCode.BAD_FIELD, "kind"),
    ("kind-bytes", pack({"kind": b"ping", "id": "m1"}), ErrorCode.BAD_FIELD, "kind"),
    ("missing-id", pack({"kind": "ping"}), ErrorCode.BAD_FIELD, "id"),
    ("empty-id", pack({"kind": "ping", "id": ""}), ErrorCode.BAD_FIELD, "id"),
    ("id-with-space", pack({"kind": "ping", "id": "a b"}), ErrorCode.BAD_FIELD, "id"),
    ("id-65", pack({"kind": "ping", "id": "x" * 65}), ErrorCode.BAD_FIELD, "id"),
    ("id-int", pack({"kind": "ping", "id": 7}), ErrorCode.BAD_FIELD, "id"),
    ("unknown-field", pack({"kind": "ping", "id": "m1", "extra": 1}), ErrorCode.BAD_FIELD,
     "extra"),
    ("missing-selector", pack({"kind": "send", "id": "m1", "actor": "a"}), ErrorCode.BAD_FIELD,
     "selector"),
    ("args-not-list", send_with(args={"a": 1}), ErrorCode.BAD_FIELD, "args"),
    ("kwargs-not-map", send_with(kwargs=[1]), ErrorCode.BAD_FIELD, "kwargs"),
    ("actor-digit", send_with(actor="9lives"), ErrorCode.BAD_FIELD, "actor"),
    ("actor-space", send_with(actor="two words"), ErrorCode.BAD_FIELD, "actor"),
    ("actor-empty", send_with(actor=""), ErrorCode.BAD_FIELD, "actor"),
    ("actor-65", send_with(actor="a" * 65), ErrorCode.BAD_FIELD, "actor"),
    ("actor-bytes", send_with(actor=b"echo"), ErrorCode.BAD_FIELD, "actor"),
    ("actor-nil", send_with(actor=None), ErrorCode.BAD_FIELD, "actor"),
    ("selector-slash", send_with(selector="a/b"), ErrorCode.BAD_FIELD, "selector"),
    ("text-bytes", pack({"kind": "mission", "id": "m1", "text": b"hi"}), ErrorCode.BAD_FIELD,
     "text"),
    ("text-empty", pack({"kind": "mission", "id": "m1", "text": ""}), ErrorCode.BAD_FIELD,
     "text"),
    ("watch-nil-ref", pack({"kind": "watch", "id": "m1", "ref": None}), ErrorCode.BAD_FIELD,
     "ref"),
    ("bool-as-int", pack({"kind": "deliver", "id": "m1", "actor": "a", "selector": "b",
                          "attempt": True}), ErrorCode.BAD_FIELD, "attempt"),
    ("float-as-int", pack({"kind": "deliver", "id": "m1", "actor": "a", "selector": "b",
                           "attempt": 1.0}), ErrorCode.BAD_FIELD, "attempt"),
    ("attempt-zero", pack({"kind": "deliver", "id": "m1", "actor": "a", "selector": "b",
                           "attempt": 0}), ErrorCode.BAD_FIELD, "attempt"),
    ("bool-heartbeat", pack({"kind": "register", "id": "m1", "name": "a", "selectors": [],
                             "heartbeat_ms": False}), ErrorCode.BAD_FIELD, "heartbeat_ms"),
    ("dup-selectors", pack({"kind": "register", "id": "m1", "name": "a",
                            "selectors": ["x", "x"]}), ErrorCode.BAD_FIELD, "selectors"),
    ("bad-selector-name", pack({"kind": "register", "id": "m1", "name": "a",
                                "selectors": ["ok", "not ok"]}), ErrorCode.BAD_FIELD, "selectors"),
    ("int-as-bool", pack({"kind": "reply", "id": "m1", "ref": "d1", "ok": 1}),
     ErrorCode.BAD_FIELD, "ok"),
    ("failed-reply-no-error", pack({"kind": "reply", "id": "m1", "ref": "d1", "ok": False}),
     ErrorCode.BAD_FIELD, "error"),
    ("ok-reply-with-error", pack({"kind": "reply", "id": "m1", "ref": "d1", "ok": True,
                                  "error": "x"}), ErrorCode.BAD_FIELD, "error"),
    ("pong-bool-time", pack({"kind": "pong", "id": "m1", "time": True}), ErrorCode.BAD_FIELD,
     "time"),
    ("event-bad-name", pack({"kind": "event", "id": "m1", "ref": "x", "event": "a b"}),
     ErrorCode.BAD_FIELD, "event"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [case[1:] for case in DECODE_ERRORS],
    ids=[case[0] for case in DECODE_ERRORS],
)
def test_decode_errors(payload: Any, code: ErrorCode, field: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(payload)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert caught.value.message == str(caught.value)


@pytest.mark.parametrize(
    ("payload", "msg_id", "kind"),
    [
        (pack({"kind": "send", "id": "m1", "actor": "9"}), "m1", "send"),
        (pack({"kind": "launch", "id": "m2"}), "m2", None),
        (pack({"kind": "ping", "id": "a b"}), None, "ping"),
        (send_with(args=nested(40)), "m1", "send"),
    ],
)
def test_errors_carry_the_readable_id(payload: bytes, msg_id: str | None, kind: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(payload)
    assert (caught.value.msg_id, caught.value.ref, caught.value.kind) == (msg_id, msg_id, kind)


def test_custom_limits() -> None:
    small = Limits(max_payload_bytes=64, max_depth=3, max_str_bytes=8, max_items=6)
    assert decode(send_with(args=[[1, 2]]), small) == Send(
        id="m1", actor="echo", selector="say", args=[[1, 2]]
    )
    for payload in (
        send_with(args=[[[1]]]),
        send_with(args=[1] * 7),
        send_with(args=["é" * 5]),  # 5 characters, 10 UTF-8 bytes
        send_with(args=["x" * 60]),
    ):
        with pytest.raises(wire.TooLarge):
            decode(payload, small)


# -- frames -----------------------------------------------------------------------

GOOD = encode(Ping(id="p1"))
FRAME_ERRORS: list[tuple[str, Any, ErrorCode, bytes | None, str | None]] = [
    ("three-frames", [b"peer", b"", VERSION], ErrorCode.BAD_FRAME, b"peer", None),
    ("five-frames", [b"peer", b"", VERSION, GOOD, b""], ErrorCode.BAD_FRAME, b"peer", None),
    ("no-frames", [], ErrorCode.BAD_FRAME, None, None),
    ("not-a-list", b"peer", ErrorCode.BAD_FRAME, None, None),
    ("str-frame", [b"peer", b"", "batos/1", GOOD], ErrorCode.BAD_FRAME, b"peer", None),
    ("empty-identity", [b"", b"", VERSION, GOOD], ErrorCode.BAD_FRAME, None, None),
    ("delimiter-not-empty", [b"peer", b"x", VERSION, GOOD], ErrorCode.BAD_FRAME, b"peer", None),
    ("wrong-version", [b"peer", b"", b"batos/2", GOOD], ErrorCode.BAD_VERSION, b"peer", None),
    ("no-version", [b"peer", b"", b"", GOOD], ErrorCode.BAD_VERSION, b"peer", None),
    ("bad-payload", [b"peer", b"", VERSION, b"\xc1"], ErrorCode.BAD_PAYLOAD, b"peer", None),
    ("bad-field", [b"peer", b"", VERSION, send_with(actor="")], ErrorCode.BAD_FIELD, b"peer",
     "m1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frames", "code", "identity", "msg_id"),
    [case[1:] for case in FRAME_ERRORS],
    ids=[case[0] for case in FRAME_ERRORS],
)
def test_router_frame_errors(
    frames: Any, code: ErrorCode, identity: bytes | None, msg_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_router_frames(frames)
    assert (caught.value.code, caught.value.identity, caught.value.msg_id) == (
        code,
        identity,
        msg_id,
    )


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"", VERSION], BadFrame),
        ([b"x", VERSION, GOOD], BadFrame),
        ([b"", b"batos/0", GOOD], BadVersion),
        ([b"", VERSION, pack({"kind": "ping"})], BadField),
    ],
)
def test_peer_frame_errors(frames: list[bytes], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        parse_peer_frames(frames)


def test_frames_accept_bytes_like() -> None:
    frames: list[Any] = [bytearray(b"peer"), memoryview(b""), VERSION, memoryview(GOOD)]
    assert split_router_frames(frames) == (b"peer", Ping(id="p1"))


# -- encoding validates too -----------------------------------------------------------

ENCODE_ERRORS: list[tuple[Record, type[ProtocolError]]] = [
    (Send(actor="bad name", selector="x"), wire.BadField),
    (Send(actor="a", selector="b", args=(1, 2)), wire.BadPayload),  # type: ignore[arg-type]
    (Send(actor="a", selector="b", args=[{1: 2}]), wire.BadPayload),
    (Send(actor="a", selector="b", args=[object()]), wire.BadPayload),
    (Send(actor="a", selector="b", args=[bytearray(b"x")]), wire.BadPayload),
    (Send(actor="a", selector="b", args=[2**64]), wire.TooLarge),
    (Send(actor="a", selector="b", args=["\ud800"]), wire.BadPayload),
    (Result(ref="r", value="x" * (256 * 1024 + 1)), wire.TooLarge),
    (Result(ref="r", value=[b"x" * 200_000] * 6), wire.TooLarge),
    (Reply(ref="d", ok=False), wire.BadField),
    (Register(name="a", selectors=["x"], heartbeat_ms=0), wire.BadField),
    (Ping(id=""), wire.BadField),
]


@pytest.mark.parametrize(("msg", "error"), ENCODE_ERRORS)
def test_encode_rejects_what_decode_would(msg: Record, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        encode(msg)


def test_encode_rejects_non_records() -> None:
    with pytest.raises(wire.BadKind):
        encode(Record())


def test_error_code_enum_values_are_stable() -> None:
    assert [code.value for code in ErrorCode] == [
        "bad_frame", "bad_version", "too_large", "bad_payload", "bad_kind", "bad_field",
        "unknown_actor", "unknown_selector", "forbidden", "overloaded", "step_failed",
        "timeout", "not_found", "cancelled", "internal", "unavailable", "shutting_down",
        "does_not_understand",
    ]  # fmt: skip


# -- error replies ---------------------------------------------------------------------

REPLY_CASES: list[tuple[Any, ErrorCode]] = [
    (UnknownActor("ghost"), ErrorCode.UNKNOWN_ACTOR),
    (UnknownSelector("echo", "shout"), ErrorCode.UNKNOWN_SELECTOR),
    (NotLearned("echo", "shout", ["attempt 1: line 1: ..."]), ErrorCode.DOES_NOT_UNDERSTAND),
    (Overloaded("echo", 100), ErrorCode.OVERLOADED),
    (StepFailed("echo", "say", "m1", "boom"), ErrorCode.STEP_FAILED),
    (TimeoutError(), ErrorCode.TIMEOUT),
    (RuntimeError("secret path /etc"), ErrorCode.INTERNAL),
    (KernelError("plain"), ErrorCode.INTERNAL),
    (ErrorCode.FORBIDDEN, ErrorCode.FORBIDDEN),
    ("cancelled", ErrorCode.CANCELLED),
    ("not_found", ErrorCode.NOT_FOUND),
    (NameReserved("missions"), ErrorCode.FORBIDDEN),
    (NameTaken("ocr"), ErrorCode.FORBIDDEN),
    ("unavailable", ErrorCode.UNAVAILABLE),
    ("shutting_down", ErrorCode.SHUTTING_DOWN),
]


@pytest.mark.parametrize(("problem", "code"), REPLY_CASES)
def test_error_reply_codes(problem: Any, code: ErrorCode) -> None:
    reply = error_reply(problem, ref="m1")
    assert (reply.code, reply.ref) == (code, "m1")
    assert reply.message
    assert "secret" not in reply.message  # foreign exceptions lend no text
    assert decode(encode(reply)) == reply


def test_every_code_has_a_trigger() -> None:
    triggered = {case[2] for case in DECODE_ERRORS} | {case[2] for case in FRAME_ERRORS}
    triggered |= {code for _, code in REPLY_CASES}
    assert triggered == set(ErrorCode)


def test_error_reply_from_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        split_router_frames([b"peer", b"", VERSION, send_with(selector="")])
    reply = error_reply(caught.value, msg_id="k1")
    assert reply == Error(
        id="k1",
        code="bad_field",
        message=caught.value.message,
        ref="m1",
        details={"field": "selector"},
    )


def test_error_reply_for_bad_version_names_the_supported_one() -> None:
    with pytest.raises(BadVersion) as caught:
        split_router_frames([b"peer", b"", b"batos/9", GOOD])
    reply = error_reply(caught.value)
    assert (reply.ref, reply.details) == (None, {"supported": ["batos/1"]})
    assert reply.id and reply.id != GOOD


def test_error_reply_message_override() -> None:
    reply = error_reply(ErrorCode.OVERLOADED, "mailbox full", details={"retry_after_ms": 50})
    assert reply.message == "mailbox full"
    assert (reply.details, reply.ref) == ({"retry_after_ms": 50}, None)


# -- tables and constants ----------------------------------------------------------------


def test_direction_tables() -> None:
    assert set(KINDS) == CLIENT_KINDS | ACTOR_KINDS | KERNEL_TO_CLIENT | KERNEL_TO_ACTOR
    assert not (CLIENT_KINDS | ACTOR_KINDS) & {"deliver", "accepted", "event", "result", "error"}
    assert "heartbeat" in ACTOR_KINDS & KERNEL_TO_ACTOR


def test_constants() -> None:
    assert VERSION == b"batos/1"
    assert (wire.HEARTBEAT_INTERVAL_MS, wire.HEARTBEAT_LIVENESS) == (1000, 3)
    assert Limits(1 << 20, 32, 256 << 10, 10_000) == DEFAULT_LIMITS
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(decode(encode(Ping(id=i))).id == i for i in ids)


def test_ids_are_random_from_their_first_character() -> None:
    """One process's ids share no prefix, so a short start of a mission id names it."""
    ids = [new_id() for _ in range(200)]
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    assert len({i[:8] for i in ids}) == len(ids)  # 32 random bits each: a clash ~5e-6


def test_records_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Ping().id = "x"  # type: ignore[misc]


# -- fuzzing: decode raises nothing but ProtocolError -----------------------------------------


def decodes_or_protocol_error(call: Any, *args: Any) -> None:
    try:
        result = call(*args)
    except ProtocolError as exc:
        assert exc.code in set(ErrorCode)
        return
    assert result is not None


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_decode_bytes(payload: bytes) -> None:
    decodes_or_protocol_error(decode, payload)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_fuzz_router_frames(frames: list[bytes]) -> None:
    decodes_or_protocol_error(split_router_frames, frames)


wire_keys = st.one_of(st.text(max_size=8), st.binary(max_size=4), st.integers(-5, 5))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=16),
    st.binary(max_size=16),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(wire_keys, inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [*sorted({name for specs in wire.records._SPECS.values() for name, _, _ in specs}), "kind", "x"]
)


@FUZZ
@given(
    st.one_of(st.sampled_from(sorted(KINDS)), st.text(max_size=8), st.none()),
    st.dictionaries(field_names, values, max_size=6),
)
def test_fuzz_structured_payloads(kind: Any, body: dict[str, Any]) -> None:
    try:
        payload = pack({"kind": kind, **body})
    except (TypeError, ValueError, OverflowError):
        return  # msgpack cannot even carry it
    decodes_or_protocol_error(decode, payload)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_samples(msg: Record, data: st.DataObject) -> None:
    payload = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    decodes_or_protocol_error(decode, bytes(payload[:cut]))


class _Str(str):
    """A str subclass: only the full walk and the full field checks may vouch for it."""


tight_limits = st.builds(
    Limits, max_payload_bytes=st.integers(1, 24), max_depth=st.integers(1, 4),
    max_str_bytes=st.integers(1, 12), max_items=st.integers(1, 5),
)  # fmt: skip
odd_scalars = st.one_of(
    scalars, st.text(max_size=4).map(_Str), st.just(2**64), st.just(-(2**63) - 1),
    st.just((1, 2)), st.just(bytearray(b"x")),
)  # fmt: skip
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(wire_keys, inner, max_size=6)
    ),
    max_leaves=25,
)


@FUZZ
@given(st.dictionaries(st.text(max_size=14), odd_values, max_size=6), tight_limits)
def test_fast_walk_agrees_with_the_full_walk(obj: dict[str, Any], limits: Limits) -> None:
    """The fast path may only pass what the full walk passes (and, for exact wire
    types and strings short enough to need no UTF-8 measuring, all of it)."""
    try:
        wire.codec._check_tree(obj, limits)
        full = True
    except ProtocolError:
        full = False
    fast = wire.codec._tree_ok(obj, limits)
    assert not fast or full
    if _plain(obj, limits.max_str_bytes // 4):
        assert fast == full


def _plain(value: Any, chars: int) -> bool:
    """Only exact wire types, and no string over `chars` characters."""
    if type(value) is dict:
        return all(_plain(k, chars) and _plain(v, chars) for k, v in value.items())
    if type(value) is list:
        return all(_plain(v, chars) for v in value)
    if type(value) is str:
        return len(value) <= chars
    return type(value) in (type(None), bool, int, float, bytes)


@FUZZ
@given(st.sampled_from(sorted(wire.records._SPECS, key=lambda c: c.kind)), st.data())
def test_field_fast_paths_agree_with_the_full_checks(
    cls: type[Record], data: st.DataObject
) -> None:
    """Each field check returns the same value or raises alike, exact type or not."""
    for _name, check, _required in wire.records._SPECS[cls]:
        value = data.draw(odd_scalars | st.lists(st.text(max_size=3), max_size=3)
                          | st.dictionaries(st.text(max_size=3), scalars, max_size=2))
        results = []
        for candidate in (value, _Str(value) if type(value) is str else value):
            try:
                results.append(("ok", check(candidate)))
            except wire.fields._Invalid as exc:
                results.append(("invalid", str(exc)))
        assert results[0][0] == results[1][0]
        if results[0][0] == "ok":
            assert _same(results[0][1], results[1][1])


def _same(a: Any, b: Any) -> bool:
    """Equal, counting NaN as equal to NaN (a float field may carry one)."""
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return both_nan or a == b


def test_random_bytes_seeded() -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"seed={seed}")
    rng = random.Random(seed)
    prefixes = [b"", b"\x82", b"\x81\xa4kind", b"\x91" * 40, b"\xdd\xff\xff\xff\xff"]
    for _ in range(3000):
        payload = rng.choice(prefixes) + rng.randbytes(rng.randrange(64))
        decodes_or_protocol_error(decode, payload)


# -- the module stays sans-IO ----------------------------------------------------------------


def test_wire_imports_neither_zmq_nor_zodb() -> None:
    code = (
        "import sys, kernel.wire\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'ZODB', 'ZEO'))\n"
        "print(','.join(bad))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
