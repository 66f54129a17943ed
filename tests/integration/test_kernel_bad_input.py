"""The kernel under bad input, over a real ipc socket and a real image.

A seeded fuzzer throws malformed frames at the kernel while a well-behaved
client echoes: every bad message must get exactly the typed `error` the wire
module predicts for it, the good client every right answer, and the image
nothing but the good client's steps. The other tests pin single behaviours:
frames over `kernel.max_message_bytes`, a full mailbox, a table of wire-level
errors, a failing step, and what the JSON log does (and does not) say.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from kernel import auth, wire
from kernel.client import Client, RemoteError
from kernel.image import Image
from kernel.sockets import FRAME_SLACK, TRANSPORT_FACTOR
from tests.helpers.actors import Recorder, Sleeper
from tests.helpers.kernel import captured_output, kernel_process, running_kernel

Frames = list[bytes]
FuzzCase = tuple[str, Frames, tuple[str, str | None]]  # generator, frames, expected (code, ref)
V = wire.VERSION
FUZZ_IDENTITY = b"fuzzer"
ADMIN_KINDS = auth.ROLE_KINDS["admin"]
REPLY_WAIT_MS = 10_000  # upper bound on any single wait; never reached when all is well


def endpoint_of(image_dir: Path) -> str:
    return f"ipc://{image_dir}/kernel.sock"


@contextlib.contextmanager
def dealer(image_dir: Path, identity: bytes | None = None) -> Iterator[zmq.Socket[bytes]]:
    """A raw DEALER on the kernel's ipc endpoint: sends whatever frames it is given."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint_of(image_dir))
    try:
        yield sock
    finally:
        sock.close(linger=0)


def receive(sock: zmq.Socket[bytes], timeout_ms: int = REPLY_WAIT_MS) -> wire.Message | None:
    """The next record on `sock`, or None when nothing came within `timeout_ms`."""
    if not sock.poll(timeout_ms):
        return None
    return wire.parse_peer_frames(sock.recv_multipart())


def assert_pong(sock: zmq.Socket[bytes], ping_id: str) -> None:
    sock.send_multipart(wire.peer_frames(wire.Ping(id=ping_id)))
    pong = receive(sock)
    assert isinstance(pong, wire.Pong) and pong.ref == ping_id, pong


def pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def install(image_dir: Path, **actors: Any) -> None:
    """Put actors into the image before a kernel serves it."""
    with Image.open(image_dir) as image, image.transaction("test actors") as root:
        for name, actor in actors.items():
            root["actors"][name] = actor


# -- the fuzzer: seeded generators of bad frames -------------------------------------

WRONG_VALUES: tuple[Any, ...] = (
    True, False, 0, -1, 2**64 - 1, -(2**63), 1.5, float("nan"), "", " ", "x" * 65,
    "bad name!", "é", "\x00", b"bin", b"", [], [None], {}, {"a": {"b": [1]}}, None,
)
ODD_KINDS = ("", "PING", "launch", "ping ", "x" * 300, "évent", "deliver2", "Send", "\x00")
HUGE_HEADERS = (  # declare far more than follows
    b"\xdb\xff\xff\xff\xff", b"\xda\xff\xff", b"\xd9\xff", b"\xc6\xff\xff\xff\xff",
    b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdc\xff\xff", b"\xc9\xff\xff\xff\xff\x05",
    b"\xc1",  # never used in msgpack
)
BAD_UTF8 = (b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\xc0\xaf", b"ok\x80")


def fuzz_id(rng: random.Random) -> str:
    return f"f{rng.getrandbits(48):x}"


def bodies(rng: random.Random) -> dict[str, dict[str, Any]]:
    """A well-formed body for every kind, both directions."""
    ref = fuzz_id(rng)
    return {
        "ping": {}, "heartbeat": {},
        "send": {"actor": "system", "selector": "echo", "args": [1], "kwargs": {}},
        "mission": {"text": "hi", "options": {}},
        "watch": {"ref": ref}, "cancel": {"ref": ref}, "status": {"ref": None},
        "register": {"name": "ocr", "selectors": ["read"], "heartbeat_ms": 1000},
        "reply": {"ref": ref, "ok": True, "value": 1, "error": None},
        "unregister": {"name": "ocr"},
        "accepted": {"ref": ref}, "event": {"ref": ref, "event": "state", "data": {}},
        "result": {"ref": ref, "value": [1, "x"]}, "pong": {"time": 1.5, "ref": ref},
        "error": {"code": "internal", "message": "x", "ref": None, "details": {}},
        "deliver": {"actor": "ocr", "selector": "read", "args": [], "kwargs": {}, "attempt": 1},
    }


def record(rng: random.Random, kinds: Any = None) -> dict[str, Any]:
    """A well-formed record of a random kind, as the dict that would be packed."""
    table = bodies(rng)
    kind = rng.choice(sorted(kinds or table))
    return {"kind": kind, "id": fuzz_id(rng), **table[kind]}


def raw_map(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A msgpack map from already-encoded keys and values (at most 15 entries)."""
    return bytes([0x80 | len(entries)]) + b"".join(k + v for k, v in entries)


def with_raw_value(rng: random.Random, value: bytes) -> bytes:
    """A record whose field (existing or new) holds the raw msgpack `value`."""
    rec = record(rng)
    key = rng.choice([*rec, "args", "extra"])
    rec.pop(key, None)
    return raw_map([(pack(k), pack(v)) for k, v in rec.items()] + [(pack(key), value)])


def body(payload: bytes) -> Frames:
    return [b"", V, payload]


def gen_wrong_type(rng: random.Random) -> Frames:
    rec = record(rng)
    rec[rng.choice(list(rec))] = rng.choice(WRONG_VALUES)
    return body(pack(rec))


def gen_missing_field(rng: random.Random) -> Frames:
    rec = record(rng)
    del rec[rng.choice(list(rec))]
    return body(pack(rec))


def gen_unknown_field(rng: random.Random) -> Frames:
    rec = record(rng)
    rec[rng.choice(["extra", "Kind", "ID", "", "x" * 70, "é", "ref2"])] = rng.choice(WRONG_VALUES)
    return body(pack(rec))


def gen_unknown_kind(rng: random.Random) -> Frames:
    rec = record(rng)
    rec["kind"] = rng.choice(ODD_KINDS)
    return body(pack(rec))


def gen_bad_id(rng: random.Random) -> Frames:
    rec = record(rng)
    rec["id"] = rng.choice(["", " ", "a b", "x" * 65, "é", "\x00", "\x7f", 5, None, b"id", True])
    return body(pack(rec))


def gen_bool_as_int(rng: random.Random) -> Frames:
    kind, name, value = rng.choice([
        ("register", "heartbeat_ms", True), ("register", "heartbeat_ms", False),
        ("reply", "ok", 1), ("reply", "ok", 0), ("deliver", "attempt", True),
        ("pong", "time", True), ("send", "args", True), ("mission", "text", False),
    ])
    rec = record(rng, [kind])
    rec[name] = value
    return body(pack(rec))


def gen_misdirected(rng: random.Random) -> Frames:
    """A well-formed kind that only the kernel sends (answered `bad_kind`)."""
    return body(pack(record(rng, (wire.KERNEL_TO_CLIENT | wire.KERNEL_TO_ACTOR) - ADMIN_KINDS)))


def gen_non_str_key(rng: random.Random) -> Frames:
    rec = record(rng)
    key: Any = rng.choice([1, -1, None, b"k", 1.5, True])
    if rng.random() < 0.5:
        rec[key] = 1
    else:
        rec["kwargs"] = {key: "nested"}
    return body(pack(rec))


def raw_ext(rng: random.Random) -> bytes:
    """An ext value of any type code, -1 (Timestamp) and the reserved negatives included."""
    code = rng.choice([-1, -1, -128, -2, 0, 5, 127])
    size = rng.choice([1, 2, 4, 8, 16, 0, 3, 12, 20])
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    head = bytes([fixed[size]]) if size in fixed else bytes([0xC7, size])
    return head + (code & 0xFF).to_bytes(1, "big") + rng.randbytes(size)


def gen_ext(rng: random.Random) -> Frames:
    ext = raw_ext(rng)
    if rng.random() < 0.2:
        return body(ext)
    return body(with_raw_value(rng, rng.choice([ext, b"\x91" + ext, b"\x81\xa1k" + ext])))


def gen_deep(rng: random.Random) -> Frames:
    depth = rng.choice([31, 32, 33, 40, 200, 1023, 1025, 5000, 100_000])
    opener = rng.choice([b"\x91", b"\x81\xa1k"])  # a list of one, or a map of one
    return body(with_raw_value(rng, opener * depth + b"\xc0"))


def gen_huge_length(rng: random.Random) -> Frames:
    raw = rng.choice(HUGE_HEADERS) + rng.randbytes(rng.randint(0, 16))
    return body(raw if rng.random() < 0.3 else with_raw_value(rng, raw))


def gen_bad_utf8(rng: random.Random) -> Frames:
    text = rng.choice(BAD_UTF8)
    raw = bytes([0xA0 | len(text)]) + text
    if rng.random() < 0.5:
        return body(with_raw_value(rng, raw))
    return body(raw_map([(pack("kind"), pack("ping")), (raw, pack(1))]))


def gen_oversized(rng: random.Random) -> Frames:
    """Over a `wire.Limits` bound, yet under the frame limit (which drops the peer)."""
    rec = record(rng)
    big: Any = rng.choice([
        "s" * (wire.DEFAULT_LIMITS.max_str_bytes + rng.randint(1, 100)),
        "é" * (wire.DEFAULT_LIMITS.max_str_bytes // 2 + 1),
        [0] * (wire.DEFAULT_LIMITS.max_items + 1),
        {f"k{i}": 0 for i in range(wire.DEFAULT_LIMITS.max_items + 1)},
    ])
    rec[rng.choice(["args", "kind", "id", "value", "text"])] = big
    return body(pack(rec))


def gen_truncated(rng: random.Random) -> Frames:
    valid = pack(record(rng))
    return body(valid[: rng.randrange(len(valid))])


def gen_trailing(rng: random.Random) -> Frames:
    return body(pack(record(rng)) + rng.randbytes(rng.randint(1, 8)))


def gen_flipped(rng: random.Random) -> Frames:
    payload = bytearray(pack(record(rng)))
    for _ in range(rng.randint(1, 3)):
        payload[rng.randrange(len(payload))] = rng.randrange(256)
    return body(bytes(payload))


def gen_random_bytes(rng: random.Random) -> Frames:
    return body(rng.randbytes(rng.randint(0, 300)))


def gen_wrong_shape(rng: random.Random) -> Frames:
    return body(pack(rng.choice([
        [], ["ping", "x"], 0, -5, 2**64 - 1, "ping", None, True, 1.5, b"\x82",
        [{"kind": "ping", "id": "x"}], {}, {"kind": "ping"},
    ])))


def gen_bad_version(rng: random.Random) -> Frames:
    version = rng.choice([b"", b"batos/2", b"BATOS/1", V + b"\x00", b"batos/", b"batos/10",
                          b"batos/0", rng.randbytes(7), b"\xff" * 300])
    return [b"", version, pack(record(rng))]


def gen_bad_delimiter(rng: random.Random) -> Frames:
    first = rng.choice([b"\x00", b" ", V, rng.randbytes(rng.randint(1, 16))])
    return [first, V, pack(record(rng))]


def gen_frame_count(rng: random.Random) -> Frames:
    pool = [b"", V, pack(record(rng)), rng.randbytes(rng.randint(0, 20))]
    count = rng.choice([1, 2, 4, 5, 6, 9])
    if rng.random() < 0.3:  # the delimiter forgotten: [version, payload]
        return [V, pack(record(rng))]
    return [b"", V, *(rng.choice(pool) for _ in range(count - 2))][:count]


GENERATORS: tuple[tuple[Callable[[random.Random], Frames], float], ...] = (
    (gen_wrong_type, 3), (gen_missing_field, 2), (gen_unknown_field, 2),
    (gen_unknown_kind, 1), (gen_bad_id, 1), (gen_bool_as_int, 1), (gen_misdirected, 1),
    (gen_non_str_key, 1), (gen_ext, 1), (gen_deep, 1), (gen_huge_length, 1),
    (gen_bad_utf8, 1), (gen_oversized, 0.05), (gen_truncated, 2), (gen_trailing, 1),
    (gen_flipped, 2), (gen_random_bytes, 1), (gen_wrong_shape, 1), (gen_bad_version, 1),
    (gen_bad_delimiter, 1), (gen_frame_count, 1),
)


def expected_error(frames: Frames, limits: wire.Limits) -> tuple[str, str | None] | None:
    """`(code, ref)` the kernel owes a DEALER for `frames`; None when they are well-formed.

    The wire module is the oracle; what it decodes is bad only if the kernel
    alone may send that kind (protocol section 4.5: `bad_kind`).
    """
    try:
        _, msg = wire.split_router_frames([FUZZ_IDENTITY, *frames], limits)
    except wire.ProtocolError as exc:
        return str(exc.code), exc.msg_id
    if msg.kind in ADMIN_KINDS:
        return None  # a real request: the fuzzer sends only garbage
    return str(wire.ErrorCode.BAD_KIND), msg.id


def fuzz_cases(rng: random.Random, count: int, limits: wire.Limits) -> list[FuzzCase]:
    """`count` bad messages, each with the error the kernel owes it."""
    funcs, weights = zip(*GENERATORS, strict=True)
    cases: list[FuzzCase] = []
    while len(cases) < count:
        gen = rng.choices(funcs, weights)[0]
        frames = gen(rng)
        expected = expected_error(frames, limits)
        if expected is not None:
            cases.append((gen.__name__, frames, expected))
    return cases


def run_fuzzer(sock: zmq.Socket[bytes], cases: list[FuzzCase], burst: int = 250) -> Counter[str]:
    """Send `cases` in bursts; each must be answered, in order, by its predicted error."""
    codes: Counter[str] = Counter()
    for start in range(0, len(cases), burst):
        batch = cases[start:start + burst]
        for _, frames, _ in batch:
            sock.send_multipart(frames)
        for index, (name, frames, (code, ref)) in enumerate(batch, start):
            reply = receive(sock)
            assert isinstance(reply, wire.Error), \
                f"case {index} ({name}): got {reply!r} for {short(frames)}"
            assert (reply.code, reply.ref) == (code, ref), \
                f"case {index} ({name}): {reply!r} for {short(frames)}, expected {code} {ref}"
            codes[str(reply.code)] += 1
    return codes


def short(frames: Frames) -> str:
    return repr([f[:80] for f in frames])


def garbage_over_raw_sockets(image_dir: Path, rng: random.Random, count: int) -> None:
    """Peers that do not even speak ZMTP: bytes straight into the ipc socket."""
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03"  # the start of a ZMTP 3 greeting
    for i in range(count):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(image_dir / "kernel.sock"))
            junk = rng.randbytes(rng.randint(1, 2000))
            with contextlib.suppress(OSError):  # the kernel may hang up first
                raw.sendall(greeting + junk if i % 2 else junk)


def echo_client(endpoint: str, seed: int, minimum: int, stop: threading.Event,
                out: dict[str, Any]) -> None:
    """Echo varied values until `stop` (and at least `minimum` times); note any wrong reply."""
    rng = random.Random(seed)
    wrong: list[tuple[Any, Any]] = []
    done = 0
    try:
        with Client(endpoint, timeout=REPLY_WAIT_MS / 1000) as client:
            while done < minimum or not stop.is_set():
                value = {"n": done, "bin": rng.randbytes(rng.randint(0, 64)),
                         "text": "é✓" * rng.randint(0, 20), "f": rng.random(),
                         "list": [None, True, -(2**63), 2**64 - 1]}
                answer = client.send("system", "echo", value)
                done += 1
                if answer != value:
                    wrong.append((value, answer))
    except Exception as exc:  # reported by the test, not lost in the thread
        out["error"] = exc
    out["done"], out["wrong"] = done, wrong


def image_state(image_dir: Path) -> dict[str, Any]:
    """What bad input must not change: actors, mailboxes, dead letters, counters."""
    with Image.open(image_dir) as image, image.reading() as root:
        return {"actors": sorted(root["actors"].keys()),
                "mailboxes": sorted(root["mailboxes"].keys()),
                "dead": sum(len(box.dead) for box in root["mailboxes"].values()),
                "metrics": root["metrics"].snapshot(),
                "echoes": root["actors"]["system"].echoes}


def test_fuzzed_frames_get_typed_errors_and_change_nothing(
        image_dir: Path, rng: random.Random) -> None:
    before = image_state(image_dir)
    cases = fuzz_cases(rng, 10_000, wire.DEFAULT_LIMITS)
    stop, good = threading.Event(), dict[str, Any]()
    with running_kernel(image_dir) as kernel:
        assert kernel.limits == wire.DEFAULT_LIMITS  # the oracle decodes as the kernel does
        echoer = threading.Thread(target=echo_client, args=(
            endpoint_of(image_dir), rng.randrange(2**32), 200, stop, good))
        echoer.start()
        try:
            with dealer(image_dir, FUZZ_IDENTITY) as sock:
                codes = run_fuzzer(sock, cases)
                assert_pong(sock, "after-fuzz")
                fuzz_counters = kernel.counters.snapshot()
                # raw peers hang up at once: what the kernel answers them is undeliverable
                garbage_over_raw_sockets(image_dir, rng, 20)
                assert_pong(sock, "after-raw-garbage")
        finally:
            stop.set()
            echoer.join(60)
        assert not echoer.is_alive()
        with Client(endpoint_of(image_dir)) as fresh:
            assert fresh.ping() > 0
        counters = kernel.counters.snapshot()
    print(f"fuzz: {len(cases)} messages of {sum(len(f) for _, f, _ in cases)} frames, "
          f"replies by code {dict(sorted(codes.items()))}, "
          f"by generator {dict(Counter(name for name, _, _ in cases))}, "
          f"good echoes {good.get('done')}, kernel counters {counters}")
    assert "error" not in good, good.get("error")
    assert good["wrong"] == [] and good["done"] >= 200
    assert sum(codes.values()) == len(cases)
    assert set(codes) >= {"bad_frame", "bad_version", "too_large", "bad_payload",
                          "bad_kind", "bad_field"}
    assert min(codes.values()) >= 20, codes
    assert fuzz_counters.get("undeliverable", 0) == 0  # every bad message was answered
    assert counters.get("internal_errors", 0) == 0
    assert counters.get("bad.unroutable", 0) == 0
    after = image_state(image_dir)
    assert after["metrics"]["steps.committed"] == good["done"] == after["echoes"]
    assert after["actors"] == before["actors"]
    # only the actors' own mailboxes (made at genesis): none made for garbage
    assert after["mailboxes"] == before["mailboxes"] == before["actors"]
    assert after["dead"] == 0
    unchanged = {k: v for k, v in after["metrics"].items()
                 if k not in ("steps.committed", "steps.actor.system")}
    assert unchanged == {k: v for k, v in before["metrics"].items()
                         if k not in ("steps.committed", "steps.actor.system")}


# -- frames over the size limit -----------------------------------------------------


def test_payload_over_the_limit_is_too_large_and_far_over_drops_the_peer(
        image_dir: Path) -> None:
    limit = 4096
    with running_kernel(image_dir, overrides={"kernel.max_message_bytes": limit}):
        with dealer(image_dir) as big:
            over = wire.Send(id="too-big", actor="system", selector="echo",
                             args=["x" * (limit + 100)])
            frames = wire.peer_frames(over, wire.Limits(max_payload_bytes=2 * limit))
            assert limit < len(frames[2]) < TRANSPORT_FACTOR * limit
            big.send_multipart(frames)
            answer = receive(big, 5000)
            assert isinstance(answer, wire.Error) and answer.code == "too_large"
            assert answer.ref is None  # a payload over the limit is not read
            far = wire.Send(id="far-too-big", actor="system", selector="echo",
                            args=["x" * (TRANSPORT_FACTOR * limit + FRAME_SLACK)])
            big.send_multipart(wire.peer_frames(far, wire.Limits(
                max_payload_bytes=4 * limit + 2 * FRAME_SLACK)))
            assert receive(big, 1500) is None  # ZeroMQ dropped the connection, unread
            assert_pong(big, "back-again")  # the DEALER reconnected on its own
        with Client(endpoint_of(image_dir)) as fresh:
            assert fresh.ping() > 0
            near = "y" * (limit - 200)  # just under the limit still gets through
            assert fresh.send("system", "echo", near) == near
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["system"].echoes == 1  # the oversized echoes never ran


# -- a full mailbox -------------------------------------------------------------------


def test_full_mailbox_answers_overloaded_and_loses_nothing_accepted(image_dir: Path) -> None:
    install(image_dir, sleeper=Sleeper())
    sends = [wire.Send(id=f"nap-{i}", actor="sleeper", selector="nap", args=[0.2])
             for i in range(6)]
    finals: dict[str, list[wire.Result | wire.Error]] = {s.id: [] for s in sends}
    with running_kernel(image_dir, overrides={"mailbox.capacity": 2}), \
            dealer(image_dir) as sock:
        for send in sends:  # pipelined: no waiting between them
            sock.send_multipart(wire.peer_frames(send))
        while any(not got for got in finals.values()):
            reply = receive(sock)
            assert isinstance(reply, wire.Result | wire.Error) and reply.ref in finals, reply
            finals[reply.ref].append(reply)
        assert receive(sock, 500) is None  # nothing after the finals
    assert all(len(got) == 1 for got in finals.values()), finals
    outcomes = [got[0] for got in finals.values()]
    kinds = Counter(str(r.code) if isinstance(r, wire.Error) else "result" for r in outcomes)
    assert kinds["overloaded"] >= 1 and kinds["result"] >= 1
    assert set(kinds) == {"result", "overloaded"}, kinds
    assert all(r.value == 0.2 for r in outcomes if isinstance(r, wire.Result))
    with Image.open(image_dir) as image, image.reading() as root:
        assert root["actors"]["sleeper"].naps == kinds["result"]
        assert root["metrics"].value("steps.committed") == kinds["result"]
        box = root["mailboxes"].get("sleeper")  # genesis makes it; refused ones never enter
        assert box is None or (len(box), len(box.dead)) == (0, 0)


# -- wire-level errors, case by case -------------------------------------------------


def payload(**fields: Any) -> bytes:
    return pack(fields)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


PING = payload(kind="ping", id="c1")

# (case, frames as a DEALER sends them, code, ref, details that must be present).
# Cases that reach a step carry their own ids: one id never causes a second effect,
# so a resent "c1" would only replay the first answer.
WIRE_CASES: list[tuple[str, Frames, str, str | None, dict[str, Any]]] = [
    ("one frame", [b""], "bad_frame", None, {}),
    ("two frames", [b"", V], "bad_frame", None, {}),
    ("four frames", [b"", V, PING, b""], "bad_frame", None, {}),
    ("five frames", [b"", V, PING, PING, PING], "bad_frame", None, {}),
    ("no delimiter", [V, PING], "bad_frame", None, {}),
    ("delimiter not empty", [b"x", V, PING], "bad_frame", None, {}),
    ("bad version", [b"", b"batos/2", PING], "bad_version", None, {"supported": ["batos/1"]}),
    ("empty version", [b"", b"", PING], "bad_version", None, {}),
    ("payload not msgpack", [b"", V, b"\xc1"], "bad_payload", None, {}),
    ("empty payload", [b"", V, b""], "bad_payload", None, {}),
    ("truncated payload", [b"", V, PING[:-1]], "bad_payload", None, {}),
    ("trailing bytes", [b"", V, PING + b"\x00"], "bad_payload", None, {}),
    ("not a map", [b"", V, pack(["ping", "c1"])], "bad_payload", None, {}),
    ("int map key", [b"", V, pack({"kind": "ping", "id": "c1", 1: 2})], "bad_payload",
     None, {}),
    ("ext type", [b"", V, payload(kind="ping", id="c1", x=msgpack.ExtType(5, b"1"))],
     "bad_payload", None, {}),
    ("timestamp", [b"", V, payload(kind="ping", id="c1", x=msgpack.Timestamp(1))],
     "bad_payload", "c1", {"field": "x"}),
    ("invalid utf-8", [b"", V, raw_map([(pack("kind"), b"\xa2\xff\xfe")])], "bad_payload",
     None, {}),
    ("huge declared length", [b"", V, b"\x82\xa4kind\xdb\xff\xff\xff\xffping"],
     "bad_payload", None, {}),
    ("nested too deep", [b"", V, payload(kind="send", id="c1", actor="system",
                                         selector="echo", args=nested(40))],
     "too_large", "c1", {}),
    ("nested too deep to unpack", [b"", V, b"\x91" * 5000 + b"\xc0"], "too_large", None, {}),
    ("string too long", [b"", V, payload(kind="send", id="c1", actor="system",
                                         selector="echo", args=["s" * (256 * 1024 + 1)])],
     "too_large", "c1", {"field": "args[0]"}),
    ("too many items", [b"", V, payload(kind="send", id="c1", actor="system",
                                        selector="echo", args=[0] * 10_001)],
     "too_large", "c1", {"field": "args"}),
    ("unknown kind", [b"", V, payload(kind="launch", id="c1")], "bad_kind", "c1", {}),
    ("result sent to the kernel", [b"", V, payload(kind="result", id="c1", ref="c0")],
     "bad_kind", "c1", {}),
    ("deliver sent to the kernel", [b"", V, payload(kind="deliver", id="c1", actor="a",
                                                    selector="b")], "bad_kind", "c1", {}),
    ("pong sent to the kernel", [b"", V, payload(kind="pong", id="c1", time=1.0)],
     "bad_kind", "c1", {}),
    ("error sent to the kernel", [b"", V, payload(kind="error", id="c1", code="internal",
                                                  message="x")], "bad_kind", "c1", {}),
    ("kind missing", [b"", V, payload(id="c1")], "bad_field", "c1", {"field": "kind"}),
    ("kind not a str", [b"", V, payload(kind=1, id="c1")], "bad_field", "c1",
     {"field": "kind"}),
    ("id missing", [b"", V, payload(kind="ping")], "bad_field", None, {"field": "id"}),
    ("id with a space", [b"", V, payload(kind="ping", id="c 1")], "bad_field", None,
     {"field": "id"}),
    ("id too long", [b"", V, payload(kind="ping", id="c" * 65)], "bad_field", None,
     {"field": "id"}),
    ("required field missing", [b"", V, payload(kind="send", id="c1", actor="system")],
     "bad_field", "c1", {"field": "selector"}),
    ("unknown field", [b"", V, payload(kind="ping", id="c1", extra=1)], "bad_field", "c1",
     {"field": "extra"}),
    ("bin for str", [b"", V, payload(kind="send", id="c1", actor=b"system",
                                     selector="echo")], "bad_field", "c1", {"field": "actor"}),
    ("bool for int", [b"", V, payload(kind="register", id="c1", name="ocr", selectors=[],
                                      heartbeat_ms=True)], "bad_field", "c1",
     {"field": "heartbeat_ms"}),
    ("int for bool", [b"", V, payload(kind="reply", id="c1", ref="k1", ok=1)], "bad_field",
     "c1", {"field": "ok"}),
    ("reply failing without an error", [b"", V, payload(kind="reply", id="c1", ref="k1",
                                                        ok=False)], "bad_field", "c1",
     {"field": "error"}),
    ("int out of range", [b"", V, payload(kind="register", id="c1", name="ocr", selectors=[],
                                          heartbeat_ms=0)], "bad_field", "c1",
     {"field": "heartbeat_ms"}),
    ("bad name", [b"", V, payload(kind="send", id="c1", actor="system",
                                  selector="read page")], "bad_field", "c1",
     {"field": "selector"}),
    ("unknown actor", [b"", V, payload(kind="send", id="s1", actor="nobody",
                                       selector="echo")], "unknown_actor", "s1", {}),
    ("unknown selector", [b"", V, payload(kind="send", id="s2", actor="system",
                                          selector="nope")], "unknown_selector", "s2", {}),
    ("private selector", [b"", V, payload(kind="send", id="s3", actor="system",
                                          selector="_p_activate")], "unknown_selector",
     "s3", {}),
    ("method not marked a handler", [b"", V, payload(kind="send", id="s4", actor="recorder",
                                                     selector="not_a_handler")],
     "unknown_selector", "s4", {}),
]


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    image_dir = tmp_path_factory.mktemp("wire") / "image"
    install(image_dir, recorder=Recorder())
    with running_kernel(image_dir):
        yield image_dir


@pytest.mark.parametrize(("frames", "code", "ref", "details"),
                         [case[1:] for case in WIRE_CASES], ids=[c[0] for c in WIRE_CASES])
def test_wire_error_codes(shared_kernel: Path, frames: Frames, code: str, ref: str | None,
                          details: dict[str, Any]) -> None:
    with dealer(shared_kernel) as sock:
        sock.send_multipart(frames)
        sock.send_multipart(wire.peer_frames(wire.Ping(id="then")))
        # a step's error may overtake the pong, a decoding error never does
        got = [receive(sock), receive(sock)]
        errors = [m for m in got if isinstance(m, wire.Error)]
        pongs = [m for m in got if isinstance(m, wire.Pong) and m.ref == "then"]
        assert len(errors) == len(pongs) == 1, got  # exactly one answer; the kernel serves on
        assert (errors[0].code, errors[0].ref) == (code, ref), errors[0]
        assert details.items() <= errors[0].details.items(), errors[0]


# -- a step that raises ---------------------------------------------------------------


def test_failing_step_answers_step_failed_and_kernel_serves_on(image_dir: Path) -> None:
    install(image_dir, recorder=Recorder())
    with running_kernel(image_dir), Client(endpoint_of(image_dir)) as client:
        boom = wire.Send(actor="recorder", selector="explode", args=[7])
        client.send_record(boom)
        reply = client.receive()
        assert isinstance(reply, wire.Error), reply
        assert (reply.code, reply.ref) == ("step_failed", boom.id)
        assert client.send("recorder", "note", "after") == "after"
        assert client.send("system", "echo", 1) == 1
        assert client.ping() > 0
    with Image.open(image_dir) as image, image.reading() as root:
        recorder = root["actors"]["recorder"]
        assert (recorder.calls, recorder.last) == (1, "after")  # the failed step left nothing
        assert "elsewhere" not in root["mailboxes"]  # its outbox was aborted with it
        dead = list(root["mailboxes"]["recorder"].dead.values())
        assert [d["id"] for d in dead] == [boom.id]
        assert root["metrics"].value("steps.doomed") == 1


# -- the JSON log ----------------------------------------------------------------------


def test_json_log_describes_steps_without_their_bodies(image_dir: Path) -> None:
    secret = "SECRET-PAYLOAD-123"
    with kernel_process(image_dir, "--log-json") as proc:
        with Client(endpoint_of(image_dir)) as client:
            echo = wire.Send(actor="system", selector="echo", args=[secret],
                             kwargs={})
            client.send_record(echo)
            reply = client.receive()
            assert isinstance(reply, wire.Result) and reply.value == secret
            with pytest.raises(RemoteError) as refused:
                client.send("system", "nope", secret)
            assert refused.value.code == "unknown_selector"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        output = captured_output(proc)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(output.splitlines()), output  # every line is JSON
    steps = [line["step"] for line in lines if "step" in line]
    ours = [s for s in steps if s["message_id"] == echo.id]
    assert len(ours) == 1, steps
    assert ours[0]["actor"] == "system" and ours[0]["selector"] == "echo"
    assert ours[0]["ok"] is True and isinstance(ours[0]["duration_ms"], int | float)
    assert any(s["ok"] is False and s["selector"] == "nope" for s in steps), steps
    assert secret not in output


def test_fuzz_covers_every_kind() -> None:
    assert set(bodies(random.Random(0))) == set(wire.KINDS)
