#!/usr/bin/env python3
"""Kill a process running steps with SIGKILL, again and again, and audit the image.

A child process opens the image and runs steps in a loop on a few relay
actors, one thread each: every step consumes message `seq` of its chain and
produces `seq + 1` in the same transaction. The parent SIGKILLs the child at a
random moment (sometimes during start-up), reopens the image the way a kernel
would, checks the storage file, and audits each chain:

- lost:       a message some committed step produced that is neither pending
              nor consumed;
- duplicated: a message consumed more than once, pending more than once, or
              both pending and consumed;
- corrupt:    the image did not open or failed the storage check, or a step
              was half-applied (a consumed message with no producer, counters
              that disagree with the consumed set, a mailbox size that
              disagrees with its contents).

With `--zeo` the image is served by a real `runzeo` (as `batos zeo` runs it)
and the child is a ZEO client, as a kernel on a shared image is; now and then
(`--server-kills`, a share of the rounds) the ZEO server is SIGKILLed too, in
the middle of the child's commits, and started again before the audit.

Prints one JSON object with `--json`:
    {"kills", "lost", "duplicated", "corrupt", "dead", "steps", "torn_tails", "seed", ...}
Exit status is 0 only when lost, duplicated and corrupt are all zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RELAY_SOURCE = '''\
def relay(self, step, seq):
    self.seen[seq] = self.seen.get(seq, 0) + 1
    step.send(self.name, "relay", seq + 1)
    self._p_changed = True
'''


# -- the child: run steps until killed -----------------------------------------
def child(image_dir: Path, chains: int) -> None:
    from kernel import mailbox as mb
    from kernel.image import Image
    from kernel.steps import StepRunner

    image = Image.open(image_dir)
    print("ready", flush=True)
    threads = [threading.Thread(target=_relay_loop, args=(image, f"chain{i}", mb, StepRunner),
                                daemon=True) for i in range(chains)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _relay_loop(image: Any, actor: str, mb: Any, runner_cls: Any) -> None:
    conn = image.connection()
    runner = runner_cls(conn, image.config)
    while True:
        conn.transaction_manager.begin()
        keys = mb.mailbox_for(conn.root(), actor).keys()
        conn.transaction_manager.abort()
        for key in keys:
            runner.run(actor, key)


# -- the parent: set up, kill, audit ----------------------------------------------
def setup(image_dir: Path, chains: int) -> None:
    from BTrees.IIBTree import IIBTree

    from kernel import mailbox as mb
    from kernel.image import Image
    from kernel.mailbox import Envelope
    from prototypes import Method, UvmObject

    with Image.open(image_dir) as image, image.transaction("crash setup") as root:
        for i in range(chains):
            name = f"chain{i}"
            actor = UvmObject(name=name, seen=IIBTree())
            actor.set_slot("relay", Method(RELAY_SOURCE))
            root["actors"][name] = actor
            mb.post(root, Envelope(name, "relay", (0,)), capacity=10)


def audit(image_dir: Path, chains: int, data_fs: Path | None = None) -> dict[str, int]:
    """Reopen the image as a kernel would and count lost/duplicated/corrupt."""
    from kernel.image import Image

    counts = {"lost": 0, "duplicated": 0, "corrupt": 0, "dead": 0, "steps": 0}
    try:
        with Image.open(image_dir) as image, image.reading() as root:
            for i in range(chains):
                _audit_chain(root, f"chain{i}", counts)
        _check_storage(data_fs or image_dir / "Data.fs")
    except Exception as exc:  # any failure to open or read is corruption
        print(f"corrupt image: {type(exc).__name__}: {exc}", file=sys.stderr)
        counts["corrupt"] += 1
    return counts


def _audit_chain(root: Any, name: str, counts: dict[str, int]) -> None:
    seen = dict(root["actors"][name].seen.items())
    box = root["mailboxes"][name]
    pending_seqs = [box.peek(key).args[0] for key in box.keys()]
    produced = {0} | {seq + 1 for seq in seen}
    pending_set = set(pending_seqs)
    counts["lost"] += len(produced - set(seen) - pending_set)
    counts["duplicated"] += sum(n - 1 for n in seen.values())
    counts["duplicated"] += len(pending_seqs) - len(pending_set)
    counts["duplicated"] += len(pending_set & set(seen))
    counts["corrupt"] += len((set(seen) | pending_set) - produced)
    counts["corrupt"] += int(root["metrics"].value(f"steps.actor.{name}") != sum(seen.values()))
    counts["corrupt"] += int(len(box) != len(pending_seqs))
    counts["dead"] += len(box.dead)
    counts["steps"] += sum(seen.values())


def _check_storage(data_fs: Path) -> None:
    from ZODB.scripts import fstest

    fstest.check(str(data_fs))


class ZeoProcess:
    """`runzeo` serving the image directory, on a free local port."""

    def __init__(self, image_dir: Path) -> None:
        import socket

        from kernel import zeo

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.command = zeo.runzeo_command(zeo.write_conf(image_dir, self.address))
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        import socket

        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"runzeo did not listen on {self.address}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def client_dir(parent: Path, address: str) -> Path:
    """An image directory that opens the ZEO server's storage (settings, blob cache)."""
    directory = parent / "zeo-client"
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "batos.toml").write_text(f'[image]\nzeo = "{address}"\n')
    return directory


def kill_once(image_dir: Path, chains: int, rng: random.Random,
              server: ZeoProcess | None = None, server_share: float = 0.0) -> None:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--image", str(image_dir),
         "--chains", str(chains)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    if rng.random() < 0.8:  # mostly mid-run; sometimes during start-up and redelivery
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.4))
    else:
        time.sleep(rng.uniform(0.0, 0.6))
    if server is not None and rng.random() < server_share:  # the server dies mid-commit
        server.kill()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if server is not None and server.kills and server.proc and server.proc.poll() is not None:
        server.start()


def run(kills: int, chains: int, seed: int, image_dir: Path, progress: bool,
        zeo: bool = False, server_share: float = 0.0) -> dict[str, Any]:
    rng = random.Random(seed)
    setup(image_dir, chains)
    server = ZeoProcess(image_dir) if zeo else None
    if server is not None:
        server.start()
    try:
        result = _rounds(kills, chains, rng, image_dir, progress, server, server_share)
    finally:
        if server is not None:
            server.stop()
    return {**result, "seed": seed, "zeo": zeo,
            "server_kills": server.kills if server is not None else 0}


def _rounds(kills: int, chains: int, rng: random.Random, image_dir: Path, progress: bool,
            server: ZeoProcess | None, server_share: float) -> dict[str, Any]:
    target = client_dir(image_dir.parent, server.address) if server else image_dir
    totals = {"kills": 0, "lost": 0, "duplicated": 0, "corrupt": 0, "dead": 0}
    steps = 0
    started = time.monotonic()
    for n in range(1, kills + 1):
        kill_once(target, chains, rng, server, server_share)
        counts = audit(target, chains, image_dir / "Data.fs")
        totals["kills"] = n
        for key in ("lost", "duplicated", "corrupt", "dead"):
            totals[key] = max(totals[key], counts[key])
        steps = counts["steps"]
        if progress:
            print(f"kill {n}/{kills}: {steps} steps committed, lost={counts['lost']} "
                  f"duplicated={counts['duplicated']} corrupt={counts['corrupt']}",
                  file=sys.stderr)
    # FileStorage drops a torn, uncommitted tail on open and keeps it aside as
    # Data.fs.trN: that is a transaction that never committed, not a repair.
    torn = len(list(image_dir.glob("Data.fs.tr*")))
    return {**totals, "steps": steps, "torn_tails": torn, "chains": chains,
            "seconds": round(time.monotonic() - started, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver")
    parser.add_argument("--chains", type=int, default=3, help="relay actors (threads)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument("--image", type=Path, default=None,
                        help="image directory (default: a fresh temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--zeo", action="store_true",
                        help="serve the image with runzeo; the child is a ZEO client")
    parser.add_argument("--server-kills", type=float, default=0.3,
                        help="with --zeo: share of rounds that also SIGKILL the ZEO server")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.image, args.chains)
        return 0
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="batos-crash-") as tmp:
        image_dir = args.image or Path(tmp) / "image"
        result = run(args.kills, args.chains, seed, image_dir, progress=not args.json,
                     zeo=args.zeo, server_share=args.server_kills)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    ok = result["lost"] == result["duplicated"] == result["corrupt"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
