#!/usr/bin/env python3
"""An external actor attached to a kernel over CURVE-secured TCP.

Set-up, once (the kernel's image in ./live_image):

    batos keys init
    batos keys add greeter --role actor
    batos serve --bind ipc://live_image/kernel.sock --bind tcp://127.0.0.1:5555

Then run this actor and talk to it from another terminal:

    python scripts/example_actor.py
    batos send greeter greet '"Ada"'        # -> "hello, Ada (from greeter)"
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel.auth import PeerKeys
from kernel.remote import RemoteActor


class Greeter(RemoteActor):
    """Two handlers: `greet` and `add`."""

    name = "greeter"

    def __init__(self) -> None:
        self.greeted = 0

    def greet(self, who: str) -> str:
        self.greeted += 1
        return f"hello, {who} (from {self.name})"

    def add(self, a: float, b: float) -> float:
        return a + b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--image", type=Path, default=Path("live_image"))
    parser.add_argument("--key", type=Path, default=None,
                        help="secret key file (default IMAGE/keys/issued/NAME.key_secret)")
    parser.add_argument("--server-key", type=Path, default=None,
                        help="kernel public key (default IMAGE/keys/server.key)")
    parser.add_argument("--name", default="greeter", help="actor name to register")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    actor = Greeter()
    actor.name = args.name
    keys = None
    if args.endpoint.startswith("tcp://"):
        keys = PeerKeys.load(args.key or args.image / "keys" / "issued" / f"{args.name}.key_secret",
                             args.server_key or args.image / "keys" / "server.key")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    actor.run(args.endpoint, keys, stop=lambda: stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
