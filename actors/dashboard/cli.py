"""`batos dashboard`: the web dashboard of a running kernel.

    batos dashboard [--http 127.0.0.1:8765] [--allow-remote] [--interval 1.0]
                    [--image DIR] [--endpoint E --key K --server-key S]

A process of its own, a client of the kernel like every other command (see
`source`): the kernel's loop never serves HTTP, and the dashboard can be
started, stopped and restarted without touching the kernel. It prints the
address to open (with the token) on its first line, then serves until
SIGINT or SIGTERM. `--http HOST:0` picks a free port (the line names it).
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from kernel.cli import EndpointOpt, ImageOpt, KeyOpt, ServerKeyOpt, TimeoutOpt, err_console
from kernel.image import DEFAULT_IMAGE

if TYPE_CHECKING:
    from aiohttp.web import Application

DEFAULT_HTTP = "127.0.0.1:8765"


def dashboard(
    http: Annotated[str, typer.Option(
        "--http", help="HOST:PORT to serve on (a loopback host unless --allow-remote; "
                       "port 0 picks a free one).")] = DEFAULT_HTTP,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a non-loopback HOST (the token is still needed; "
                               "use TLS in front of it).")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, help="Seconds between live updates.")] = 1.0,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0,
) -> None:
    """Serve the web dashboard: missions, timelines, adapters, audit plots, live counters."""
    from actors.dashboard.errors import MissingWebLibrary
    from actors.dashboard.source import KernelSource
    from kernel.auth import PeerKeys
    from kernel.cli_refs import mission_entry
    from kernel.client import endpoint_for

    try:
        from actors.dashboard import access, web
    except ModuleNotFoundError as exc:  # aiohttp, jinja2 or matplotlib
        raise MissingWebLibrary(str(exc.name)) from exc
    host, port = access.parse_address(http, allow_remote)
    token = access.load_token(image)
    keys = None
    if key is not None:
        keys = PeerKeys.load(key, server_key or image / "keys" / "server.key")
    source = KernelSource(endpoint or endpoint_for(image), mission_entry(image), keys, timeout)
    app = web.make_app(source, token, loopback_only=access.is_loopback(host),
                       interval=interval)
    asyncio.run(_serve(app, host, port, token))


async def _serve(app: Application, host: str, port: int, token: str) -> None:
    from aiohttp import web as aio

    runner = aio.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = aio.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{bound}/?token={token}", flush=True)
    err_console.print(f"[dim]dashboard on http://{shown}:{bound}/ (token in "
                      f"dashboard.token of the image); Ctrl-C stops it[/]")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
