#!/usr/bin/env python3
"""Benchmark several kernels on one shared image (ZEO) against one kernel on a local one.

In one run, with real `batos serve` processes and a real `runzeo`:

    anchor            steps/s of one kernel on its local FileStorage image
    zeo_one           steps/s of one kernel on a ZEO image
    zeo_two           steps/s of two kernels on one ZEO image, each with its own actors
    zeo_step_ratio    = zeo_one / anchor
    two_kernel_ratio  = zeo_two / zeo_one
    failover_s        kill -9 of the kernel holding every actor -> the first step
                      committed by the other kernel (bounded below by leases.ttl_s)
    raw_zeo_ratio     raw ZEO commits/s / raw FileStorage commits/s (one connection
                      incrementing a counter, no kernel): what the storage alone costs

The steps are relay steps: each of `--chains` actors consumes message n of its
chain and posts n + 1 in the same transaction, so every actor always has
exactly one message pending and the kernels run steps back to back without a
client in the loop. A rate is the growth of the actors' step counts (read
through the kernel, a read-only `count` step) over `--seconds`, after a warm-up.
Both ZEO configurations run the same chains: one kernel runs all of them, or
each of two kernels runs half (`leases.actors` patterns `a*` and `b*`).
The failover is measured with leases.ttl_s = `--ttl` (renewed every ttl/6).

    python scripts/bench_scale.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_kernel import stop  # noqa: E402

RELAY = '''\
def relay(self, step, seq):
    self.seen[seq] = 1
    step.send(self.name, "relay", seq + 1)
    self._p_changed = True
'''
COUNT = '''\
def count(self, step):
    return len(self.seen)
'''
BATOS = [sys.executable, "-c", "from kernel.cli import main; main()"]


def make_image(directory: Path, chains: list[str]) -> None:
    from BTrees.IIBTree import IIBTree

    from kernel import mailbox as mb
    from kernel.image import Image
    from kernel.mailbox import Envelope
    from prototypes import Method, UvmObject

    with Image.open(directory) as image, image.transaction("bench setup") as root:
        for name in chains:
            actor = UvmObject(name=name, seen=IIBTree())
            actor.set_slot("relay", Method(RELAY))
            actor.set_slot("count", Method(COUNT))
            root["actors"][name] = actor
            mb.post(root, Envelope(name, "relay", (0,)), capacity=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        yield proc
    finally:
        stop(proc)


def wait_ready(endpoint: str, proc: subprocess.Popen[bytes], limit_s: float = 120) -> None:
    from kernel.client import Client

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"a process exited with {proc.returncode}")
        with contextlib.suppress(Exception), Client(endpoint, timeout=0.5) as client:
            client.ping()
            return
        time.sleep(0.1)
    raise TimeoutError(endpoint)


def wait_port(port: int, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        time.sleep(0.05)
    raise TimeoutError(port)


def steps_done(endpoint: str, chains: list[str]) -> int:
    from kernel.client import Client

    with Client(endpoint, timeout=30) as client:
        return sum(int(client.send(name, "count")) for name in chains)


def held_all(endpoint: str, names: list[str]) -> bool:
    from kernel.client import Client

    with Client(endpoint, timeout=30) as client:
        return set(names) <= set(client.status()["leases"].get("held") or ())


def rate(endpoint: str, chains: list[str], seconds: float, warmup: float) -> float:
    time.sleep(warmup)
    before, started = steps_done(endpoint, chains), time.monotonic()
    time.sleep(seconds)
    after, ended = steps_done(endpoint, chains), time.monotonic()
    return (after - before) / (ended - started)


def kernel_dir(directory: Path, address: str, kernel: str, patterns: list[str],
               ttl: float) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    listed = ", ".join(f'"{p}"' for p in patterns)
    (directory / "batos.toml").write_text(
        f'[image]\nzeo = "{address}"\n\n[kernel]\nid = "{kernel}"\n\n'
        f"[leases]\nactors = [{listed}]\nttl_s = {ttl}\nrenew_s = {ttl / 6}\n")
    return directory


def serve(directory: Path, log: Path) -> contextlib.AbstractContextManager[Any]:
    return process([*BATOS, "serve", "--image", str(directory)], log)


def measure_anchor(tmp: Path, chains: list[str], args: Any) -> float:
    image = tmp / "local"
    make_image(image, chains)
    with serve(image, tmp / "local.log") as proc:
        wait_ready(f"ipc://{image}/kernel.sock", proc)
        return rate(f"ipc://{image}/kernel.sock", chains, args.seconds, args.warmup)


@contextlib.contextmanager
def zeo_server(tmp: Path, name: str, chains: list[str]) -> Iterator[str]:
    from kernel import zeo

    image = tmp / name
    make_image(image, chains)
    address = f"127.0.0.1:{free_port()}"
    with process(zeo.runzeo_command(zeo.write_conf(image, address)), tmp / f"{name}.log"):
        wait_port(int(address.rsplit(":", 1)[1]))
        yield address


def measure_zeo(tmp: Path, chains: list[str], args: Any) -> tuple[float, float]:
    with zeo_server(tmp, "shared-one", chains) as address:
        one = kernel_dir(tmp / "one", address, "one", ["*"], args.ttl)
        with serve(one, tmp / "one.log") as proc:
            wait_ready(f"ipc://{one}/kernel.sock", proc)
            zeo_one = rate(f"ipc://{one}/kernel.sock", chains, args.seconds, args.warmup)
    with zeo_server(tmp, "shared-two", chains) as address:
        a = kernel_dir(tmp / "a", address, "a", ["a*", "[!b]*"], args.ttl)
        b = kernel_dir(tmp / "b", address, "b", ["b*"], args.ttl)
        with serve(a, tmp / "a.log") as pa, serve(b, tmp / "b.log") as pb:
            wait_ready(f"ipc://{a}/kernel.sock", pa)
            wait_ready(f"ipc://{b}/kernel.sock", pb)
            wait_until(lambda: held_all(f"ipc://{b}/kernel.sock",
                                        [c for c in chains if c.startswith("b")]))
            zeo_two = rate(f"ipc://{a}/kernel.sock", chains, args.seconds, args.warmup)
    return zeo_one, zeo_two


def wait_until(test: Any, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not test():
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        time.sleep(0.05)


def measure_failover(tmp: Path, chains: list[str], args: Any) -> float:
    with zeo_server(tmp, "shared-failover", chains) as address:
        a = kernel_dir(tmp / "fa", address, "a", ["*"], args.ttl)
        b = kernel_dir(tmp / "fb", address, "b", ["*"], args.ttl)
        with serve(a, tmp / "fa.log") as pa:
            wait_ready(f"ipc://{a}/kernel.sock", pa)
            wait_until(lambda: held_all(f"ipc://{a}/kernel.sock", chains))
            with serve(b, tmp / "fb.log") as pb:
                endpoint = f"ipc://{b}/kernel.sock"
                wait_ready(endpoint, pb)
                time.sleep(args.warmup)
                pa.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                pa.wait()
                before = steps_done(endpoint, chains)
                wait_until(lambda: steps_done(endpoint, chains) > before, 120)
                return time.monotonic() - killed


def raw_commits(storage: Any, seconds: float) -> float:
    """Commits/s of one connection writing one counter: what a storage itself does."""
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping

    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conn.root()["n"] = PersistentMapping(count=0)
    tm.commit()
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        conn.root()["n"]["count"] += 1
        tm.commit()
        done += 1
    rate_s = done / (time.monotonic() - started)
    conn.close()
    db.close()
    return rate_s


def measure_raw(tmp: Path, seconds: float) -> tuple[float, float]:
    """The physical anchors: raw FileStorage commits/s, raw ZEO commits/s (same disk)."""
    import ZEO
    from ZODB.FileStorage import FileStorage

    from kernel import zeo

    local = raw_commits(FileStorage(str(tmp / "raw.fs")), seconds)
    image = tmp / "raw-zeo"
    image.mkdir()
    FileStorage(str(image / "Data.fs"), blob_dir=str(image / "blobs")).close()
    address = f"127.0.0.1:{free_port()}"
    with process(zeo.runzeo_command(zeo.write_conf(image, address)), tmp / "raw-zeo.log"):
        port = int(address.rsplit(":", 1)[1])
        wait_port(port)
        shared = raw_commits(ZEO.client(("127.0.0.1", port), wait_timeout=30), seconds)
    return local, shared


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=4, help="relay actors (half a*, half b*)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--ttl", type=float, default=3.0, help="leases.ttl_s for the runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    half = max(1, args.chains // 2)
    chains = [f"a{i}" for i in range(half)] + [f"b{i}" for i in range(half)]
    load_before = load()
    tmp = Path(tempfile.mkdtemp(prefix="batos-bench-scale-"))
    try:
        raw_local, raw_zeo = measure_raw(tmp, args.seconds / 2)
        anchor = measure_anchor(tmp, chains, args)
        zeo_one, zeo_two = measure_zeo(tmp, chains, args)
        failover = measure_failover(tmp, chains, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"anchor_steps_s": round(anchor, 1), "zeo_one_steps_s": round(zeo_one, 1),
              "zeo_two_steps_s": round(zeo_two, 1),
              "zeo_step_ratio": round(zeo_one / anchor, 3) if anchor else None,
              "two_kernel_ratio": round(zeo_two / zeo_one, 3) if zeo_one else None,
              "failover_s": round(failover, 2),
              "raw_filestorage_commits_s": round(raw_local, 1),
              "raw_zeo_commits_s": round(raw_zeo, 1),
              "raw_zeo_ratio": round(raw_zeo / raw_local, 3) if raw_local else None,
              "ttl_s": args.ttl, "chains": len(chains),
              "seconds": args.seconds, "cpus": os.cpu_count(),
              "load_before": load_before, "load_after": load()}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
