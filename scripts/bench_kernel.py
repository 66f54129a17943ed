#!/usr/bin/env python3
"""Benchmark the kernel against its physical anchors, in one run.

DESIGN.md ("Performance stance") asks for ratios against what the machine
itself can do, measured in the same run on the same disk:

    ping_rtt_ratio  = kernel `ping` round trip / raw pyzmq ROUTER/DEALER round trip
                      target <= 2.0
    step_rate_ratio = kernel `system echo` steps/s / raw ZODB commits/s
                      target >= 0.5

What runs where
---------------
Every server is a separate process, so that no client shares a GIL with it:

- raw echo: this script with `--raw-server ENDPOINT`, a ROUTER that sends every
  multipart message straight back (`recv_multipart` / `send_multipart`), with
  the kernel's socket options. Its client sends the same three frames a
  kernel `ping` has (delimiter, version, the encoded ping payload).
- kernel: `batos serve --image DIR` on a fresh image in a temporary directory,
  with the image's default configuration (INFO logging goes to a file there).
  The client is a DEALER speaking the wire protocol: every request is a fresh
  record encoded with `wire.peer_frames`, every answer is decoded and checked
  with `wire.parse_peer_frames`.
- raw ZODB: a FileStorage (with a blob directory, like the image's) in the
  same temporary directory; one connection, one persistent object,
  `obj.counter += 1; transaction.commit()` in a loop.

The kernel's steps are `send system echo <n>` messages, pipelined with a
window of outstanding requests; each is one transaction that writes the
image. After the kernel stops, the image is opened and the `system` actor's
echo count is checked against the number of results received, so every step
counted was a committed step.

Anchor and kernel are measured in alternating rounds, all servers up side by
side: per round, a block of raw round trips, a block of kernel pings, a raw
pipelined round, a round of raw commits, a round of kernel steps. A ratio of
two figures taken tens of seconds apart inherits whatever the machine did in
between (fsync latency on a shared disk moves several-fold within seconds);
taken in alternation, both sides of a ratio see the same conditions. Each
round's own ratio is reported too (`*_ratio_rounds`).

Round trips are reported as medians (and p90) of per-message timings; rates
as the median of the timed rounds. Everything is warmed up first.
`client_codec_us` (what the kernel client spends encoding a ping and decoding
its pong) is part of the kernel round trip and not of the raw one; it is
reported so the ratio can be read fairly. The 1-minute load average at the
start and end is reported too: other processes on the machine move every
figure.

    python scripts/bench_kernel.py            # a readable table (about 30 s idle)
    python scripts/bench_kernel.py --json     # one JSON object
    python scripts/bench_kernel.py --quick    # a short run (about 10 s)

Exit status 0 when the run completed and every answered step was found
committed in the image; the targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402
from persistent import Persistent  # noqa: E402

from kernel import wire  # noqa: E402

PING_RTT_RATIO_MAX = 2.0
STEP_RATE_RATIO_MIN = 0.5
RECV_TIMEOUT_MS = 30_000  # a silent server fails the run instead of hanging it
SOCKET_HWM = 10_000  # the kernel's own RCVHWM/SNDHWM

Frames = list[bytes]


@dataclass(frozen=True)
class Plan:
    """How much to measure; `--quick` divides it."""

    rtt_samples: int = 10_000
    pipelined_msgs: int = 20_000
    pipelined_window: int = 1000
    ping_samples: int = 10_000
    step_msgs: int = 1000
    step_window: int = 64
    step_rtt_samples: int = 500
    zodb_commits: int = 1000
    rounds: int = 5
    warmup: int = 500

    def quick(self) -> Plan:
        return Plan(rtt_samples=2000, pipelined_msgs=5000, pipelined_window=1000,
                    ping_samples=2000, step_msgs=200, step_window=64,
                    step_rtt_samples=100, zodb_commits=300, rounds=3, warmup=100)


# -- measuring --------------------------------------------------------------------


def round_trips(sock: zmq.Socket[Any], request: Callable[[], Frames],
                check: Callable[[Frames], None], count: int) -> list[float]:
    """`count` sequential round trips; each one's duration in seconds."""
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        started = clock()
        sock.send_multipart(request())
        check(sock.recv_multipart())
        samples.append(clock() - started)
    return samples


def pipelined(sock: zmq.Socket[Any], request: Callable[[], Frames],
              check: Callable[[Frames], None], total: int, window: int) -> float:
    """Messages per second with up to `window` requests outstanding."""
    started = time.perf_counter()
    sent = 0
    for _ in range(min(window, total)):
        sock.send_multipart(request())
        sent += 1
    for _ in range(total):
        check(sock.recv_multipart())
        if sent < total:
            sock.send_multipart(request())
            sent += 1
    return total / (time.perf_counter() - started)


def rounds_of(measure: Callable[[], float], rounds: int) -> list[float]:
    return [measure() for _ in range(rounds)]


def micros(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def dealer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)  # no poll per message, still bounded
    sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
    sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
    sock.connect(endpoint)
    return sock


# -- the raw anchor: a ROUTER echo in its own process ------------------------------


def raw_server(endpoint: str) -> None:
    """`--raw-server`: echo every multipart message back to its sender, forever."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
    sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
    sock.bind(endpoint)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        sock.send_multipart(sock.recv_multipart())


@contextlib.contextmanager
def raw_server_process(endpoint: str) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, __file__, "--raw-server", endpoint],
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the raw echo server did not start")
        yield
    finally:
        stop(proc)


def raw_request() -> Frames:
    return RAW_FRAMES


def raw_check(reply: Frames) -> None:
    if len(reply) != 3:
        raise RuntimeError(f"raw echo sent {len(reply)} frames")


RAW_FRAMES = wire.peer_frames(wire.Ping())  # the same frames, and size, as a kernel ping


# -- the raw anchor: ZODB commits on the same disk ----------------------------------


class Counter(Persistent):
    """The one object the raw commit loop changes."""

    counter = 0


class RawZodb:
    """A FileStorage beside the image: one connection, one object, commit after commit."""

    def __init__(self, directory: Path) -> None:
        import transaction
        import ZODB
        from ZODB.FileStorage import FileStorage

        directory.mkdir()
        storage = FileStorage(str(directory / "Data.fs"), blob_dir=str(directory / "blobs"))
        self.db = ZODB.DB(storage)
        self.conn = self.db.open()  # the thread's default transaction manager
        self.conn.root()["obj"] = self.obj = Counter()
        self.commit = transaction.commit
        self.commit()

    def commits(self, count: int) -> float:
        """Commits per second over `count` commits."""
        obj, commit = self.obj, self.commit
        started = time.perf_counter()
        for _ in range(count):
            obj.counter += 1
            commit()
        return count / (time.perf_counter() - started)

    def close(self) -> int:
        total = int(self.obj.counter)
        self.conn.close()
        self.db.close()
        return total


# -- the kernel: `batos serve` in its own process ---------------------------------


def batos_command() -> list[str]:
    script = Path(sys.executable).parent / "batos"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from kernel.cli import main; main()"]


@contextlib.contextmanager
def kernel_process(image_dir: Path, settings: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """`batos serve` on `image_dir`, answering pings; its log goes beside the image."""
    flags = [arg for s in settings for arg in ("--set", s)]
    log_path = image_dir.parent / "kernel.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([*batos_command(), "serve", "--image", str(image_dir), *flags],
                                stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_for_kernel(f"ipc://{image_dir}/kernel.sock", proc)
            yield proc
        except Exception as exc:  # the temporary directory goes: show the log now
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}\n--- kernel log (tail) ---\n{tail}") from exc
        finally:
            stop(proc)


def wait_for_kernel(endpoint: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"batos serve exited with {proc.returncode}")
        sock = dealer(ctx, endpoint)
        sock.send_multipart(wire.peer_frames(wire.Ping()))
        answered = sock.poll(500)
        sock.close()
        if answered:
            return
    raise TimeoutError(f"no kernel answered at {endpoint}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ping_request() -> Frames:
    return wire.peer_frames(wire.Ping())


class Replies:
    """Reply checks: decode every answer, insist on its kind, count the results."""

    def __init__(self) -> None:
        self.results = 0

    def pong(self, reply: Frames) -> None:
        self._expect(reply, wire.Pong)

    def result(self, reply: Frames) -> None:
        self._expect(reply, wire.Result)
        self.results += 1

    @staticmethod
    def _expect(reply: Frames, kind: type[wire.Record]) -> None:
        msg = wire.parse_peer_frames(reply)
        if not isinstance(msg, kind):  # an `error` fails the run: nothing is skipped
            raise RuntimeError(f"kernel answered {msg!r}, expected {kind.kind}")


def echo_requests() -> Callable[[], Frames]:
    """Fresh `send system echo <n>` records, each a step that writes the image."""
    counter = iter(range(1 << 62))

    def request() -> Frames:
        return wire.peer_frames(wire.Send(actor="system", selector="echo",
                                          args=[next(counter)]))
    return request


class Rounds:
    """The samples of every measurement, gathered round by round."""

    def __init__(self) -> None:
        self.raw_rtts: list[float] = []
        self.pings: list[float] = []
        self.raw_rtt_medians: list[float] = []
        self.ping_medians: list[float] = []
        self.raw_rates: list[float] = []
        self.commit_rates: list[float] = []
        self.step_rates: list[float] = []


def measure_round(raw: zmq.Socket[Any], kernel: zmq.Socket[Any], zodb: RawZodb,
                  replies: Replies, echo: Callable[[], Frames], plan: Plan,
                  rounds: Rounds) -> None:
    """One round: each anchor right beside its kernel counterpart."""
    raw_rtts = round_trips(raw, raw_request, raw_check, max(1, plan.rtt_samples // plan.rounds))
    pings = round_trips(kernel, ping_request, replies.pong,
                        max(1, plan.ping_samples // plan.rounds))
    rounds.raw_rtts += raw_rtts
    rounds.pings += pings
    rounds.raw_rtt_medians.append(statistics.median(raw_rtts))
    rounds.ping_medians.append(statistics.median(pings))
    rounds.raw_rates.append(pipelined(raw, raw_request, raw_check, plan.pipelined_msgs,
                                      plan.pipelined_window))
    rounds.commit_rates.append(zodb.commits(plan.zodb_commits))
    rounds.step_rates.append(pipelined(kernel, echo, replies.result, plan.step_msgs,
                                       plan.step_window))


def warm_up(raw: zmq.Socket[Any], kernel: zmq.Socket[Any], zodb: RawZodb, replies: Replies,
            echo: Callable[[], Frames], plan: Plan) -> None:
    round_trips(raw, raw_request, raw_check, plan.warmup)
    pipelined(raw, raw_request, raw_check, plan.pipelined_window * 2, plan.pipelined_window)
    round_trips(kernel, ping_request, replies.pong, plan.warmup)
    round_trips(kernel, echo, replies.result, plan.warmup // 5)
    pipelined(kernel, echo, replies.result, plan.step_window * 4, plan.step_window)
    zodb.commits(plan.warmup)


def figures_of(rounds: Rounds, step_rtts: list[float], plan: Plan) -> dict[str, Any]:
    def ratios(kernel: list[float], anchor: list[float]) -> list[float]:
        return [round(k / a, 3) for k, a in zip(kernel, anchor, strict=True)]

    rate = statistics.median(rounds.commit_rates)
    return {
        "raw_rtt_us": micros(statistics.median(rounds.raw_rtts)),
        "raw_rtt_p90_us": micros(percentile(rounds.raw_rtts, 0.9)),
        "raw_rtt_samples": len(rounds.raw_rtts),
        "raw_pipelined_per_s": round(statistics.median(rounds.raw_rates)),
        "raw_pipelined_rounds_per_s": [round(r) for r in rounds.raw_rates],
        "raw_pipelined_msgs": plan.pipelined_msgs,
        "raw_pipelined_window": plan.pipelined_window,
        "payload_bytes": len(RAW_FRAMES[2]),
        "raw_zodb_commits_per_s": round(rate, 1),
        "raw_zodb_commit_us": micros(1 / rate),
        "raw_zodb_rounds_per_s": [round(r, 1) for r in rounds.commit_rates],
        "kernel_ping_rtt_us": micros(statistics.median(rounds.pings)),
        "kernel_ping_rtt_p90_us": micros(percentile(rounds.pings, 0.9)),
        "kernel_ping_samples": len(rounds.pings),
        "ping_rtt_ratio_rounds": ratios(rounds.ping_medians, rounds.raw_rtt_medians),
        "kernel_steps_per_s": round(statistics.median(rounds.step_rates), 1),
        "kernel_steps_rounds_per_s": [round(r, 1) for r in rounds.step_rates],
        "step_rate_ratio_rounds": ratios(rounds.step_rates, rounds.commit_rates),
        "kernel_steps": plan.step_msgs, "kernel_step_window": plan.step_window,
        "kernel_step_rtt_us": micros(statistics.median(step_rtts)),
        "kernel_step_rtt_p90_us": micros(percentile(step_rtts, 0.9)),
    }


def measure(ctx: zmq.Context[Any], work: Path, plan: Plan,
            settings: list[str]) -> dict[str, Any]:
    """Every server up side by side; anchors and kernel measured in alternation."""
    replies = Replies()
    echo = echo_requests()
    rounds = Rounds()
    zodb = RawZodb(work / "raw-zodb")
    try:
        with raw_server_process(f"ipc://{work}/raw.sock"), \
                kernel_process(work / "image", settings) as proc:
            raw = dealer(ctx, f"ipc://{work}/raw.sock")
            kernel = dealer(ctx, f"ipc://{work}/image/kernel.sock")
            warm_up(raw, kernel, zodb, replies, echo, plan)
            for _ in range(plan.rounds):
                measure_round(raw, kernel, zodb, replies, echo, plan, rounds)
            step_rtts = round_trips(kernel, echo, replies.result, plan.step_rtt_samples)
            raw.close()
            kernel.close()
    finally:
        commits = zodb.close()
    return figures_of(rounds, step_rtts, plan) | {
        "raw_zodb_commits": commits, "kernel_exit_code": proc.returncode,
        "steps_answered": replies.results}


def committed_echoes(image_dir: Path) -> int:
    """The `system` actor's echo count, read from the image after the kernel stopped."""
    from kernel.image import Image

    with Image.open(image_dir, create=False, read_only=True) as image, \
            image.reading() as root:
        return int(root["actors"]["system"].echoes)


# -- the run ---------------------------------------------------------------------------


def client_codec_us(count: int = 2000) -> float:
    """What the kernel client spends per ping on the wire codec (encode + decode).

    Part of `kernel_ping_rtt_us` and not of `raw_rtt_us`, whose client sends
    ready-made frames: reported so the ratio can be read fairly.
    """
    reply = wire.peer_frames(wire.Pong(time=time.time(), ref=wire.new_id()))
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        wire.peer_frames(wire.Ping())
        wire.parse_peer_frames(reply)
        samples.append(time.perf_counter() - started)
    return micros(statistics.median(samples))


def run(plan: Plan, settings: list[str], quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    ctx: zmq.Context[Any] = zmq.Context.instance()
    with tempfile.TemporaryDirectory(prefix="batos-bench-") as tmp:
        work = Path(tmp)
        figures = measure(ctx, work, plan, settings)
        figures["steps_committed"] = committed_echoes(work / "image")
    figures["steps_verified"] = figures["steps_committed"] == figures["steps_answered"]
    figures["client_codec_us"] = client_codec_us()
    figures["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return summary(figures, plan, settings, quick, time.perf_counter() - started)


def summary(figures: dict[str, Any], plan: Plan, settings: list[str], quick: bool,
            duration_s: float) -> dict[str, Any]:
    ping_ratio = figures["kernel_ping_rtt_us"] / figures["raw_rtt_us"]
    step_ratio = figures["kernel_steps_per_s"] / figures["raw_zodb_commits_per_s"]
    return {
        "benchmark": "kernel",
        "raw_rtt_us": figures.pop("raw_rtt_us"),
        "kernel_ping_rtt_us": figures.pop("kernel_ping_rtt_us"),
        "ping_rtt_ratio": round(ping_ratio, 3),
        "ping_rtt_target_max": PING_RTT_RATIO_MAX,
        "ping_rtt_target_met": ping_ratio <= PING_RTT_RATIO_MAX,
        "raw_zodb_commits_per_s": figures.pop("raw_zodb_commits_per_s"),
        "kernel_steps_per_s": figures.pop("kernel_steps_per_s"),
        "step_rate_ratio": round(step_ratio, 3),
        "step_rate_target_min": STEP_RATE_RATIO_MIN,
        "step_rate_target_met": step_ratio >= STEP_RATE_RATIO_MIN,
        **figures,
        "kernel_settings": settings,
        "quick": quick,
        "plan": asdict(plan),
        "duration_s": round(duration_s, 2),
        "environment": environment(),
    }


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    return {"python": platform.python_version(), "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "ZODB": version("ZODB"),
            "msgpack": version("msgpack"), "cpus": os.cpu_count(),
            "machine": platform.machine(), "system": platform.platform()}


def table(result: dict[str, Any]) -> str:
    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    rows = [
        ("raw pyzmq round trip (median)", f"{result['raw_rtt_us']:.1f} us"),
        ("raw pyzmq pipelined", f"{result['raw_pipelined_per_s']:,} msgs/s "
                                f"(window {result['raw_pipelined_window']})"),
        ("kernel ping round trip (median)", f"{result['kernel_ping_rtt_us']:.1f} us "
                                            f"(client codec {result['client_codec_us']:.1f} us)"),
        ("  ping_rtt_ratio", f"{result['ping_rtt_ratio']:.2f}  (target <= "
                             f"{PING_RTT_RATIO_MAX}: {verdict(result['ping_rtt_target_met'])})"),
        ("raw ZODB commits", f"{result['raw_zodb_commits_per_s']:,.0f} /s "
                             f"({result['raw_zodb_commit_us']:.0f} us each)"),
        ("kernel echo steps, pipelined", f"{result['kernel_steps_per_s']:,.0f} /s "
                                         f"(window {result['kernel_step_window']})"),
        ("kernel echo step round trip", f"{result['kernel_step_rtt_us']:.0f} us"),
        ("  step_rate_ratio", f"{result['step_rate_ratio']:.2f}  (target >= "
                              f"{STEP_RATE_RATIO_MIN}: {verdict(result['step_rate_target_met'])})"),
        ("steps verified in the image", str(result["steps_verified"])),
        ("load average (start, end)", ", ".join(map(str, result["loadavg_1min"]))),
        ("duration", f"{result['duration_s']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a setting for the kernel under test (batos serve --set)")
    parser.add_argument("--raw-server", metavar="ENDPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_server:
        raw_server(args.raw_server)
        return 0
    plan = Plan().quick() if args.quick else Plan()
    result = run(plan, args.settings, args.quick)
    print(json.dumps(result) if args.json else table(result))
    return 0 if result["steps_verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
