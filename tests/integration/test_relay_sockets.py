"""The event relay's sockets, real ZeroMQ: two kernels' relays (`kernel.relay`) in
one process, each with its own keys, its own core (`Router`) and the server's
own relay code; only the rest of the kernel (the image, the ROUTER) is left out.

- over tcp the publisher is a CURVE server whose ZAP domain admits only the
  keys in `keys/kernels/`: an allowed kernel hears the events of the refs it
  waits for, in order; a kernel whose key is not there, and a subscriber
  without CURVE, hear nothing;
- a subscriber that never reads (a hung peer) never blocks the publisher:
  what overflows its bounded queue is dropped and counted.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from kernel import auth, wire
from kernel.actions import Address, Relay, Send
from kernel.leases import LeaseSpec
from kernel.relay import RELAY_HWM, EventRelay, topic
from kernel.router import Router

CLIENT = Address(0, b"\x00c", "", 1)
WINDOW_S = 1.5  # how long a subscriber that must hear nothing is listened to
HEAR_S = 20.0  # longest wait for a subscription to reach a publisher


class RelayHost(EventRelay):
    """A kernel's relay, its core and its keys; what it tells its clients is kept."""

    def __init__(self, directory: Path, kernel_id: str, endpoints: list[str]) -> None:
        self._ctx = zmq.Context()
        auth.init_server_keys(directory)
        self._keyring = auth.KeyRing(directory)
        self._auth = auth.start_authenticator(self._ctx, self._keyring)
        self.image = SimpleNamespace(directory=directory)
        self.endpoints = endpoints
        self.lease_spec = LeaseSpec(kernel_id, ("*",), 3.0)
        self.lease_guard = SimpleNamespace(spec=None)
        self.limits = wire.Limits()
        self._ipc_paths = []
        self._loop = asyncio.get_running_loop()
        self.router = Router(entry="missions", capacity=10, liveness=3, heartbeat_s=1.0,
                             roles=lambda key: "admin", depth=lambda actor: 0,
                             clock=time.monotonic, kernel=kernel_id)
        self.told: list[wire.Record] = []
        self._relay_setup()
        self._relay_bind()
        self._relay_watch()

    def _execute(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Relay):
                self._relay_publish(action)
            elif isinstance(action, Send):
                self.told.append(action.record)
        self._relay_sync()

    def row(self) -> dict[str, Any]:
        """This kernel as its lease record shows it to the others."""
        return {"host": "elsewhere", "expires": time.time() + 60,
                "events": list(self.lease_spec.events),
                "events_key": self.lease_spec.events_key}

    def waits_for(self, ref: str) -> None:
        self.router.watchers[ref] = {CLIENT}
        self._relay_sync()

    def close(self) -> None:
        self._relay_close()
        self._auth.stop()
        self._ctx.term()


def chunk(ref: str, seq: int) -> Relay:
    return Relay(ref, wire.Event(ref=ref, event="chunk", data={"seq": seq}))


async def publish_until_heard(publisher: RelayHost, hearer: RelayHost, ref: str,
                              wait_s: float) -> list[int]:
    """Publish numbered chunks until `hearer` tells its client one (or `wait_s`)."""
    deadline = time.monotonic() + wait_s
    seq = 0
    while time.monotonic() < deadline and not hearer.told:
        publisher._execute([chunk(ref, seq)])
        seq += 1
        await asyncio.sleep(0.05)
    for extra in range(seq, seq + 5):  # then a few more: they come in order, each once
        publisher._execute([chunk(ref, extra)])
    await asyncio.sleep(0.3 if hearer.told else 0)
    return [int(r.data["seq"]) for r in hearer.told if isinstance(r, wire.Event)]


def test_over_tcp_only_the_kernels_allowed_hear_and_in_order(tmp_path: Path) -> None:
    async def run() -> None:
        a = RelayHost(tmp_path / "a", "a", ["tcp://127.0.0.1:0"])
        b = RelayHost(tmp_path / "b", "b", ["tcp://127.0.0.1:0"])
        try:
            [endpoint] = a.lease_spec.events
            assert endpoint.startswith("tcp://127.0.0.1:") and a.lease_spec.events_key
            (tmp_path / "a" / "keys" / "kernels").mkdir()  # a admits b's key only
            shutil.copy(tmp_path / "b" / "keys" / "server.key",
                        tmp_path / "a" / "keys" / "kernels" / "b.key")
            b._relay_peers({"a": a.row(), "b": b.row()}, time.time())
            a._relay_peers({"a": a.row(), "b": b.row()}, time.time())
            assert b._peers == {"a": endpoint}
            b.waits_for("m1")
            a.waits_for("m2")
            seqs = await publish_until_heard(a, b, "m1", HEAR_S)
            assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert seqs[-1] >= 4
            assert b.router.counters.snapshot()["relay.heard"] == len(seqs)
            assert await publish_until_heard(b, a, "m2", WINDOW_S) == []  # a is not allowed
            plain = a._ctx.socket(zmq.SUB)  # no CURVE at all: nothing either
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(endpoint)
            plain.setsockopt(zmq.SUBSCRIBE, topic("m1"))
            for seq in range(int(WINDOW_S / 0.05)):
                a._execute([chunk("m1", 1000 + seq)])
                await asyncio.sleep(0.05)
            assert plain.poll(0) == 0
            plain.close()
        finally:
            a.close()
            b.close()

    asyncio.run(run())


def test_a_subscriber_that_never_reads_never_blocks_the_publisher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `--image a`: a relative socket path

    async def run() -> None:
        a = RelayHost(tmp_path / "a", "a", ["ipc://a/kernel.sock"])
        try:
            [endpoint] = a.lease_spec.events  # absolute: other kernels have their own cwd
            assert endpoint == f"ipc://{tmp_path}/a/events.sock"
            hung = a._ctx.socket(zmq.SUB)  # connected, subscribed, never read
            hung.setsockopt(zmq.LINGER, 0)
            hung.setsockopt(zmq.RCVHWM, RELAY_HWM)
            hung.connect(endpoint)
            hung.setsockopt(zmq.SUBSCRIBE, topic("m1"))
            counters = a.router.counters
            deadline = time.monotonic() + HEAR_S
            while a._wanted_of_us == 0:  # the subscription reached the publisher
                assert time.monotonic() < deadline, "the subscription never arrived"
                a._execute([chunk("m1", 0)])
                await asyncio.sleep(0.05)
            for seq in range(20 * RELAY_HWM):  # far beyond both queues
                a._execute([chunk("m1", seq)])
            figures = counters.snapshot()
            assert figures["relay.dropped"] > 0
            assert figures["relay.published"] + figures["relay.dropped"] >= 20 * RELAY_HWM
            hung.close()
        finally:
            a.close()

    asyncio.run(run())
