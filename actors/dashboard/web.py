"""The dashboard's web application (aiohttp): pages, JSON, SVG plots, live events.

    /                     counters, queues and the newest missions (live)
    /missions/{ref}       one mission's timeline: passes, durations, tokens,
                          confidence, retries, and its texts
    /missions/{id}/events Server-Sent Events: a running mission's own events
                          (the text being written), from the kernel's `watch`
    /adapters             the adapters by tier, with hits, misses and swap times
    /audits               the audit plots over time and every report
    /plots/{name}.svg     one audit plot (see `plots.PLOTS`)
    /events               Server-Sent Events: the `overview` every `interval` seconds,
                          one poller for all pages (`live.LiveOverview`)
    /api/...              the same data as JSON (overview, missions/{ref},
                          adapters, audits)

Pages are rendered on the server (Jinja2, autoescaped); the only script is
`static/dashboard.js`, which applies each `overview` event to the page with
`textContent` (no HTML from data). Every request passes `access.guard` first.
A kernel that does not answer makes a page say so (503), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from aiohttp import web

from actors.cli_missions import short_ids
from actors.dashboard import access, plots
from actors.dashboard.errors import NoSuchMission
from actors.dashboard.live import END, Item, LiveOverview, MissionWatch
from actors.dashboard.source import KernelSource
from kernel.cli_refs import FULL_ID, AmbiguousRef
from kernel.client import KernelUnreachable, RemoteError

T = TypeVar("T")
HERE = Path(__file__).parent
SOURCE: web.AppKey[KernelSource] = web.AppKey("source", KernelSource)
LIVE: web.AppKey[LiveOverview] = web.AppKey("live", LiveOverview)
AUDITS: web.AppKey[list[Any]] = web.AppKey("audits", list)
AUDITS_FRESH_S = 5.0
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
TIER_ORDER = ("hot", "warm", "cold")


def make_app(source: KernelSource, token: str, *, loopback_only: bool = True,
             interval: float = 1.0) -> web.Application:
    """The dashboard for the kernel `source` reaches, behind `token`."""
    app = web.Application(middlewares=[access.guard(token, loopback_only)])
    app[SOURCE] = source
    app[LIVE] = LiveOverview(source, interval)
    app[AUDITS] = []  # [monotonic time, reports] once asked
    app.on_cleanup.append(lambda app: app[LIVE].close())
    app[TEMPLATES] = _templates()
    app.router.add_get("/", overview_page)
    app.router.add_get("/missions/{ref}", mission_page)
    app.router.add_get("/missions/{ref}/events", mission_events)
    app.router.add_get("/adapters", adapters_page)
    app.router.add_get("/audits", audits_page)
    app.router.add_get("/plots/{name}.svg", plot_svg)
    app.router.add_get("/events", events)
    app.router.add_get("/api/{what}", api)
    app.router.add_get("/api/missions/{ref}", api)
    app.router.add_static("/static", HERE / "static")
    return app


# -- pages -----------------------------------------------------------------------------


async def overview_page(request: web.Request) -> web.Response:
    data = await _query(request, lambda s: s.overview())
    shorts = short_ids([str(m["id"]) for m in data["missions"]])
    return _page(request, "overview.html", data=data, counters=_counter_rows(data),
                 shorts=shorts)


async def mission_page(request: web.Request) -> web.Response:
    mission = await _query(request, lambda s: s.mission(request.match_info["ref"]))
    passes = list(mission.get("passes") or [])
    longest = max((float(p.get("seconds") or 0) for p in passes), default=0.0) or 1.0
    return _page(request, "mission.html", mission=mission, passes=passes, longest=longest,
                 total=sum(float(p.get("seconds") or 0) for p in passes),
                 tokens=sum(int(p.get("tokens") or 0) for p in passes))


async def adapters_page(request: web.Request) -> web.Response:
    rows = await _query(request, lambda s: s.adapters())
    status = await _query(request, lambda s: s.status())
    tiers: dict[str, list[dict[str, Any]]] = {tier: [] for tier in TIER_ORDER}
    for row in rows:
        tiers.setdefault(str(row.get("tier")), []).append(row)
    counters = status.get("counters") or {}
    return _page(request, "adapters.html", tiers=tiers, count=len(rows),
                 totals={tier: tier_totals(counters, tier) for tier in tiers})


def tier_totals(counters: dict[str, Any], tier: str) -> dict[str, Any]:
    """The steward's counters for one tier: hits, swaps, mean swap time (ms)."""
    swaps = int(counters.get(f"adapters.swap_count.{tier}", 0))
    micros = int(counters.get(f"adapters.swap_us.{tier}", 0))
    return {"hits": int(counters.get(f"adapters.hits.{tier}", 0)), "swaps": swaps,
            "mean_swap_ms": round(micros / swaps / 1000, 3) if swaps else None}


async def audits_page(request: web.Request) -> web.Response:
    reports = await _audits(request)
    return _page(request, "audits.html", reports=list(reversed(reports)),
                 plots=plots.PLOTS)


async def plot_svg(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in plots.PLOTS:
        raise web.HTTPNotFound(text=f"no plot {name!r} (one of {', '.join(plots.PLOTS)})")
    reports = await _audits(request)
    svg = await asyncio.to_thread(plots.render, name, reports)
    return web.Response(text=svg, content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


async def events(request: web.Request) -> web.StreamResponse:
    """The shared `overview` (or `unreachable`) snapshots, until the browser leaves."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    async with contextlib.aclosing(request.app[LIVE].stream()) as snapshots:
        async for kind, data in snapshots:
            payload = json.dumps(data, default=repr)
            try:
                await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())
            except ConnectionResetError:
                break
    return response


async def api(request: web.Request) -> web.Response:
    """The pages' data as JSON: overview, missions/{ref}, adapters, audits."""
    what = request.match_info.get("what", "missions")
    calls: dict[str, Callable[[KernelSource], Any]] = {
        "overview": lambda s: s.overview(), "adapters": lambda s: s.adapters(),
        "audits": lambda s: s.audits(),
        "missions": lambda s: s.mission(request.match_info["ref"])}
    if what not in calls:
        raise web.HTTPNotFound(text=f"no /api/{what} (overview, missions/ID, adapters, audits)")
    value = await _query(request, calls[what])
    return web.Response(text=json.dumps(value, default=repr), content_type="application/json")


async def mission_events(request: web.Request) -> web.StreamResponse:
    """The kernel's `watch` stream of one mission (full id), until it ends or the
    browser leaves."""
    mission_id = request.match_info["ref"]
    if not FULL_ID.fullmatch(mission_id):
        raise web.HTTPNotFound(text="events need the mission's full id")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    queue: asyncio.Queue[Item] = asyncio.Queue()
    watch = MissionWatch(request.app[SOURCE], mission_id, queue, asyncio.get_running_loop())
    watch.start()
    try:
        while (item := await queue.get()) != END:
            payload = json.dumps(item[1], default=repr)
            await response.write(f"event: {item[0]}\ndata: {payload}\n\n".encode())
    except ConnectionResetError:
        pass
    finally:
        watch.stop()
    return response


async def _audits(request: web.Request) -> list[dict[str, Any]]:
    """The audit history, asked at most once per `AUDITS_FRESH_S`: the audits page
    and its five plots come together, and each `history` is a kernel step."""
    held = request.app[AUDITS]
    if held and time.monotonic() - held[0] < AUDITS_FRESH_S:
        return held[1]
    reports = await _query(request, lambda s: s.audits())
    held[:] = [time.monotonic(), reports]
    return reports


# -- helpers ---------------------------------------------------------------------------


async def _query(request: web.Request, call: Callable[[KernelSource], T]) -> T:
    """`call(source)` on a worker thread; the kernel's silence becomes a 503."""
    source = request.app[SOURCE]
    try:
        return await asyncio.to_thread(call, source)
    except NoSuchMission as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except AmbiguousRef as exc:
        raise web.HTTPConflict(text=str(exc)) from exc
    except KernelUnreachable as exc:
        raise web.HTTPServiceUnavailable(
            text=f"no kernel answered at {source.endpoint} (is `batos serve` running?)"
        ) from exc
    except RemoteError as exc:
        raise web.HTTPBadGateway(text=f"the kernel answered {exc.code}: {exc}") from exc


def _page(request: web.Request, name: str, **values: Any) -> web.Response:
    template = request.app[TEMPLATES].get_template(name)
    html = template.render(endpoint=request.app[SOURCE].endpoint, **values)
    return web.Response(text=html, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def _counter_rows(data: dict[str, Any]) -> list[tuple[str, Any]]:
    status = data.get("status") or {}
    rows = [(f"kernel.{k}", v) for k, v in sorted((status.get("kernel") or {}).items())]
    rows += sorted((status.get("counters") or {}).items())
    return rows


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True)
    env.filters["when"] = when
    env.filters["seconds"] = lambda v: "-" if v is None else f"{float(v):.2f} s"
    env.filters["ratio"] = lambda v: "-" if v is None else f"{float(v):.2f}"
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * float(v):.1f} %"
    return env


def when(value: Any) -> str:
    """An epoch time as a local date and time, to the second."""
    if value is None or value == "":
        return "-"
    return dt.datetime.fromtimestamp(float(value)).strftime("%Y-%m-%d %H:%M:%S")
