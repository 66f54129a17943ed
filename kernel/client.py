"""A client of the kernel: one DEALER socket, typed replies, bounded waits.

Every wait has a timeout: when no kernel answers, `KernelUnreachable` is
raised, never a hang. A kernel `error` reply becomes `RemoteError` carrying
its stable code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from kernel import wire
from kernel.auth import PeerKeys
from kernel.errors import KernelError

DEFAULT_ENDPOINT = "ipc://live_image/kernel.sock"


class KernelUnreachable(KernelError):
    """No answer from the kernel in time."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(f"no kernel answered at {endpoint} within {timeout:g}s "
                         "(is `batos serve` running?)")
        self.endpoint = endpoint
        self.timeout = timeout


class RemoteError(KernelError):
    """The kernel answered with a typed `error`."""

    def __init__(self, error: wire.Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = str(error.code)
        self.error = error


def endpoint_for(image_dir: Path) -> str:
    """The default ipc endpoint of the image in `image_dir`."""
    return f"ipc://{image_dir}/kernel.sock"


class Client:
    """Talk to one kernel. Not thread-safe: one client per thread."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, keys: PeerKeys | None = None,
                 timeout: float = 10.0, ctx: zmq.Context[Any] | None = None) -> None:
        if endpoint.startswith("tcp://") and keys is None:
            raise KernelError("tcp endpoints need CURVE keys (--key FILE --server-key FILE)")
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx = ctx or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(endpoint)
        self._early: list[wire.Message] = []

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------
    def send_record(self, record: wire.Record) -> None:
        self.sock.send_multipart(wire.peer_frames(record))

    def receive(self, timeout: float | None = None) -> wire.Message:
        """The next record from the kernel, or `KernelUnreachable` after `timeout`."""
        if self._early:
            return self._early.pop(0)
        wait = self.timeout if timeout is None else timeout
        if not self.sock.poll(int(wait * 1000)):
            raise KernelUnreachable(self.endpoint, wait)
        return wire.parse_peer_frames(self.sock.recv_multipart())

    def ping(self) -> float:
        """Round trip in seconds."""
        started = time.perf_counter()
        record = wire.Ping()
        self.send_record(record)
        self._final(record.id)
        return time.perf_counter() - started

    def send(self, actor: str, selector: str, *args: Any, **kwargs: Any) -> Any:
        """Send a message to an actor and wait for its step's result value."""
        record = wire.Send(actor=actor, selector=selector, args=list(args), kwargs=kwargs)
        self.send_record(record)
        return self._final(record.id)

    def status(self, ref: str | None = None) -> Any:
        record = wire.Status(ref=ref)
        self.send_record(record)
        return self._final(record.id)

    def cancel(self, ref: str) -> None:
        """Cancel a mission or a pending message; returns once the kernel took it."""
        record = wire.Cancel(ref=ref)
        self.send_record(record)
        while True:
            msg = self.receive()
            if isinstance(msg, wire.Error) and msg.ref == record.id:
                raise RemoteError(msg)
            if isinstance(msg, wire.Accepted) and msg.ref == record.id:
                return

    def stream(self, record: wire.Record, ref: str | None = None,
               timeout: float | None = None) -> Iterator[wire.Message]:
        """Send `record`, then yield every reply about `ref` up to its final one."""
        ref = ref or record.id
        self.send_record(record)
        while True:
            msg = self.receive(timeout)
            if getattr(msg, "ref", None) not in (ref, record.id):
                continue
            yield msg
            if isinstance(msg, wire.Result | wire.Error) and msg.ref == ref:
                return
            if isinstance(msg, wire.Error) and msg.ref == record.id:
                return

    def _final(self, ref: str) -> Any:
        """Wait for the `result` (or `error`) about `ref`; skips `accepted`."""
        while True:
            msg = self.receive()
            if isinstance(msg, wire.Error) and msg.ref == ref:
                raise RemoteError(msg)
            if isinstance(msg, wire.Pong) and msg.ref == ref:
                return msg.time
            if isinstance(msg, wire.Result) and msg.ref == ref:
                return msg.value
