"""The codec: the tree walk, decode / encode under `Limits`, and the frames."""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from kernel.wire.errors import (
    BadField,
    BadFrame,
    BadKind,
    BadPayload,
    BadVersion,
    ProtocolError,
    TooLarge,
)
from kernel.wire.fields import (
    _BYTES_LIKE,
    _ID_RE,
    _INT_MAX,
    _INT_MIN,
    DEFAULT_LIMITS,
    VERSION,
    Limits,
    _Invalid,
    _type_name,
)
from kernel.wire.records import _FIELD_NAMES, _RULES, _SPECS, _WIRE_NAMES, KINDS, Message, Record

# -- the tree walk: wire value types, string keys, sizes, depth ---------------


def _tree_ok(value: Any, limits: Limits) -> bool:
    """The walk's fast path: True only where ``_check_tree`` would pass.

    It accepts exact wire types (what msgpack unpacks) far from every limit and
    answers False for anything else; the full walk then decides and names the
    culprit. So it changes the cost of a check, never its outcome.
    """
    return type(value) is dict and _container_ok(value, limits, 1)


def _container_ok(value: dict[Any, Any] | list[Any], limits: Limits, depth: int) -> bool:
    if depth > limits.max_depth or len(value) > limits.max_items:
        return False
    chars = limits.max_str_bytes >> 2  # at most 4 UTF-8 bytes a character
    items: Any = value
    if type(value) is dict:
        for key in value:
            if type(key) is not str or len(key) > chars:
                return False
        items = value.values()
    for item in items:  # the checks inline: a call per value would cost as much again
        kind = type(item)
        if kind is str:
            if len(item) > chars:
                return False
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is dict or kind is list:
            # an empty container passes wherever its depth does
            if (item or depth >= limits.max_depth) and not _container_ok(item, limits,
                                                                         depth + 1):
                return False
        elif kind is bytes:
            if len(item) > limits.max_payload_bytes:
                return False
        elif not (item is None or kind is float or kind is bool):
            return False
    return True


def _check_tree(value: Any, limits: Limits, depth: int = 0) -> None:
    """Vet a value and all under it; an error's ``field`` is the path to the culprit."""
    if isinstance(value, dict | list):
        _check_container(value, limits, depth + 1)
    elif isinstance(value, str):
        _check_str(value, limits)
    elif value is None or isinstance(value, bool | float):
        pass
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise TooLarge("integer outside the 64-bit range")
    elif isinstance(value, bytes):
        if len(value) > limits.max_payload_bytes:
            raise TooLarge(f"binary of {len(value)} bytes")
    else:
        raise BadPayload(f"{type(value).__name__} is not a wire value")


def _check_str(value: str, limits: Limits) -> None:
    size = len(value)
    if size * 4 > limits.max_str_bytes:  # only long strings pay for measuring UTF-8
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > limits.max_str_bytes:
        raise TooLarge(f"string of {size} bytes, over {limits.max_str_bytes}")


def _check_container(value: dict[Any, Any] | list[Any], limits: Limits, depth: int) -> None:
    if depth > limits.max_depth:
        raise TooLarge(f"nested deeper than {limits.max_depth}")
    if len(value) > limits.max_items:
        raise TooLarge(f"{len(value)} items, over {limits.max_items}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check_tree(item, limits, depth)
            except ProtocolError as exc:
                exc.field = f"[{index}]{exc.field or ''}"
                raise
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise BadPayload(f"map key of type {_type_name(key)}; keys must be str")
        _check_str(key, limits)
        try:
            _check_tree(item, limits, depth)
        except ProtocolError as exc:
            step = key[:64] if depth == 1 else f".{key[:64]}"
            exc.field = f"{step}{exc.field or ''}"
            raise


# -- decoding and encoding ------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    raise BadPayload(f"msgpack extension type {code} is not allowed")


_STRICT_OPTIONS: dict[Limits, dict[str, Any]] = {}


def _unpackb(payload: bytes, limits: Limits, *, loose: bool) -> Any:
    cap = len(payload)  # loose: only what this buffer could hold, as msgpack's default
    if loose:
        return msgpack.unpackb(payload, max_ext_len=cap, **_unpack_options(cap, cap, cap))
    options = _STRICT_OPTIONS.get(limits) or _strict_options(limits)
    return msgpack.unpackb(payload, max_ext_len=cap, **options)


def _strict_options(limits: Limits) -> dict[str, Any]:
    """Built once per Limits: the keywords cost more than the unpacking."""
    if len(_STRICT_OPTIONS) > 64:  # a caller making Limits per call: do not grow
        _STRICT_OPTIONS.clear()
    options = _STRICT_OPTIONS[limits] = _unpack_options(
        limits.max_str_bytes, limits.max_payload_bytes, limits.max_items)
    return options


def _unpack_options(max_str: int, max_bin: int, max_items: int) -> dict[str, Any]:
    return {"raw": False, "strict_map_key": True, "use_list": True, "ext_hook": _ext_hook,
            "max_str_len": max_str, "max_bin_len": max_bin,
            "max_array_len": max_items, "max_map_len": max_items}


def _unpack(payload: bytes, limits: Limits) -> tuple[Any, bool]:
    """Unpack one object: ``(object, over_limit)``; raises only ``ProtocolError``."""
    try:
        return _unpackb(payload, limits, loose=False), False
    except ProtocolError:
        raise
    except msgpack.ExtraData as exc:
        raise BadPayload("trailing bytes after the msgpack object") from exc
    except msgpack.StackError as exc:
        raise TooLarge("nested too deeply to unpack") from exc
    except (msgpack.FormatError, UnicodeDecodeError) as exc:
        raise BadPayload(f"not msgpack: {type(exc).__name__}") from exc
    except ValueError:
        pass  # malformed, or over one of the caps: the loose retry tells which
    except Exception as exc:  # the boundary's promise: only ProtocolError leaves
        raise BadPayload(f"not msgpack: {type(exc).__name__}") from exc
    try:
        return _unpackb(payload, limits, loose=True), True
    except ProtocolError:
        raise
    except Exception as exc:
        raise BadPayload("not msgpack (malformed, truncated, or a non-str map key)") from exc


def _peek_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) and _ID_RE.fullmatch(value) else None


def _check_fields(cls: type[Record], obj: dict[str, Any]) -> dict[str, Any]:
    """The record's constructor arguments from ``obj``, each field checked."""
    known = _FIELD_NAMES[cls]
    unknown = () if known.issuperset(obj) else obj.keys() - known
    if unknown:
        name = min(unknown)[:64]
        raise BadField(f"unknown field {name!r} for kind {cls.kind!r}", field=name)
    values: dict[str, Any] = {}
    for name, check, required in _SPECS[cls]:
        try:
            if name in obj:
                values[name] = check(obj[name])
            elif required:
                raise _Invalid("missing")
        except _Invalid as exc:
            raise BadField(f"{name}: {exc}", field=name) from None
    ruled = _RULES.get(cls)
    if ruled is not None:
        name, rule = ruled
        try:
            rule(values)
        except _Invalid as exc:
            raise BadField(f"{name}: {exc}", field=name) from None
    return values


def _record_class(obj: dict[str, Any]) -> type[Record]:
    kind = obj.get("kind")
    if not isinstance(kind, str):
        reason = "missing" if kind is None else f"expected str, got {_type_name(kind)}"
        raise BadField(f"kind: {reason}", field="kind")
    cls = KINDS.get(kind)
    if cls is None:
        raise BadKind(f"unknown kind {kind[:64]!r}")
    return cls


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one payload into its record; raises only ``ProtocolError`` children.

    Checks run in order: size, msgpack, the tree walk (types, keys, limits),
    ``kind``, then the fields; the first failure is reported.
    """
    if type(payload) is not bytes:
        if not isinstance(payload, _BYTES_LIKE):
            raise BadPayload(f"payload must be bytes, got {_type_name(payload)}")
        payload = bytes(payload)
    if len(payload) > limits.max_payload_bytes:
        raise TooLarge(f"payload of {len(payload)} bytes, over {limits.max_payload_bytes}")
    obj, over_limit = _unpack(payload, limits)
    if not isinstance(obj, dict):
        raise BadPayload(f"payload must be a msgpack map, got {_type_name(obj)}")
    try:
        if not _tree_ok(obj, limits):
            _check_tree(obj, limits)
        if over_limit:  # unreachable while the walk mirrors the caps; kept as a backstop
            raise TooLarge("a string or container exceeds the limits")
        cls = _record_class(obj)
        return cls(**_check_fields(cls, obj))  # type: ignore[return-value]
    except ProtocolError as exc:
        exc.msg_id = _peek_id(obj)
        kind = obj.get("kind")
        exc.kind = kind if isinstance(kind, str) and kind in KINDS else None
        raise


_packers = threading.local()


def _pack(obj: dict[str, Any]) -> bytes:
    """``msgpack.packb``, less a new Packer per call (one per thread, reused)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    payload: bytes = packer.pack(obj)  # a failed pack leaves the packer reset
    return payload


def encode(msg: Record, limits: Limits = DEFAULT_LIMITS, *, trusted: bool = False) -> bytes:
    """Encode a record, with the same checks ``decode`` applies on the other side.

    ``trusted`` skips the per-field checks for records the kernel built from
    fields it already validated; the walk over every value still runs, so a
    handler's result that the wire cannot carry is still refused.
    """
    cls = type(msg)
    names = _WIRE_NAMES.get(cls)
    if names is None:
        raise BadKind(f"{cls.__name__} is not a message record")
    obj = {"kind": cls.kind}
    for name in names:
        obj[name] = getattr(msg, name)
    try:
        if not _tree_ok(obj, limits):
            _check_tree(obj, limits)
        if not trusted:
            _check_fields(cls, obj)
        payload = _pack(obj)
    except ProtocolError as exc:
        exc.msg_id, exc.kind = _peek_id(obj), cls.kind
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. lone surrogates
        raise BadPayload(f"cannot pack: {exc}", msg_id=_peek_id(obj), kind=cls.kind) from exc
    if len(payload) > limits.max_payload_bytes:
        raise TooLarge(f"payload of {len(payload)} bytes", msg_id=msg.id, kind=cls.kind)
    return payload


# -- frames ---------------------------------------------------------------------


def _as_frames(frames: Any, count: int, identity: bytes | None = None) -> list[bytes]:
    if not isinstance(frames, list | tuple) or not all(
        isinstance(frame, _BYTES_LIKE) for frame in frames
    ):
        raise BadFrame("frames must be a list of bytes", identity=identity)
    if len(frames) != count:
        raise BadFrame(f"expected {count} frames, got {len(frames)}", identity=identity)
    return [bytes(frame) for frame in frames]


def _decode_body(delimiter: bytes, version: bytes, payload: bytes, limits: Limits) -> Message:
    if delimiter:
        raise BadFrame("the delimiter frame must be empty")
    if version != VERSION:
        raise BadVersion(f"version {version[:32]!r}, expected {VERSION!r}")
    return decode(payload, limits)


def split_router_frames(
    frames: list[bytes], limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes, Message]:
    """``[identity, b"", VERSION, payload]`` from the ROUTER -> ``(identity, record)``.

    Errors carry ``identity`` whenever the first frame was a usable one.
    """
    if type(frames) is list and len(frames) == 4:  # the socket's own output: no copies
        peer, empty, version, body = frames
        if (type(peer) is bytes and peer and type(empty) is bytes and not empty
                and type(version) is bytes and version == VERSION and type(body) is bytes):
            try:
                return peer, decode(body, limits)
            except ProtocolError as exc:
                exc.identity = peer
                raise
    first = frames[0] if isinstance(frames, list | tuple) and frames else None
    identity = bytes(first) if isinstance(first, _BYTES_LIKE) else None
    identity = identity or None  # ROUTER identities are never empty
    identity, delimiter, version, payload = _as_frames(frames, 4, identity)
    if not identity:
        raise BadFrame("empty identity frame")
    try:
        return identity, _decode_body(delimiter, version, payload, limits)
    except ProtocolError as exc:
        exc.identity = identity
        raise


def router_frames(identity: bytes, msg: Record, limits: Limits = DEFAULT_LIMITS,
                  *, trusted: bool = False) -> list[bytes]:
    """The ROUTER-side frames sending ``msg`` to the peer ``identity``."""
    return [identity, b"", VERSION, encode(msg, limits, trusted=trusted)]


def peer_frames(msg: Record, limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """The frames a DEALER peer sends for ``msg``."""
    return [b"", VERSION, encode(msg, limits)]


def parse_peer_frames(frames: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Message:
    """``[b"", VERSION, payload]`` received on a DEALER -> record."""
    if type(frames) is list and len(frames) == 3:  # the socket's own output: no copies
        empty, version, body = frames
        if (type(empty) is bytes and not empty and type(version) is bytes
                and version == VERSION and type(body) is bytes):
            return decode(body, limits)
    delimiter, version, payload = _as_frames(frames, 3)
    return _decode_body(delimiter, version, payload, limits)


