"""The `batos` command line. Only this module configures logging."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kernel import cli_console, cli_errors, perms
from kernel import config as config_mod
from kernel import zeo as zeo_cli
from kernel.cli_options import (  # also importable from here, as older modules do
    EndpointOpt,
    ImageOpt,
    JsonOpt,
    KeyOpt,
    ServerKeyOpt,
    SetOpt,
    TimeoutOpt,
)
from kernel.client import KernelUnreachable
from kernel.image import DEFAULT_IMAGE, Image
from kernel.image_cli import image_app, print_info
from prototypes.errors import BatosError

app = typer.Typer(help="batos: a runtime for local, autonomous LLM agents.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
keys_app = typer.Typer(help="CURVE keys for tcp endpoints.", no_args_is_help=True)
app.add_typer(image_app, name="image")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.command("logs")(cli_console.logs)
app.command("zeo")(zeo_cli.zeo)

console = Console()
err_console = Console(stderr=True)

def overrides_from(assignments: list[str] | None) -> dict[str, Any]:
    """`--set` flags as a dict of dotted keys (values are typed later)."""
    return dict(config_mod.parse_assignment(a) for a in assignments or ())


@app.command()
def init(
    image: ImageOpt = DEFAULT_IMAGE, set_: SetOpt = None, as_json: JsonOpt = False,
    model: Annotated[Path | None, typer.Option(
        "--model", help="A local Hugging Face model directory to use as the base model.")
    ] = None,
) -> None:
    """Create (or open) the image, run genesis, ingest the models, print a summary."""
    from kernel.plugins import run_hooks

    def progress(text: str) -> None:
        err_console.print(f"[dim]{text}[/]")

    with Image.open(image, create=True, overrides=overrides_from(set_)) as img:
        run_hooks("batos.init", img, model, progress)
        print_info(img.info(), as_json)


@config_app.command("show")
def config_show(image: ImageOpt = DEFAULT_IMAGE, set_: SetOpt = None) -> None:
    """Print the configuration as resolved from file, environment and flags."""
    cfg = config_mod.load(image if image.exists() else None, overrides_from(set_))
    print(config_mod.render(dict(cfg)), end="")


@app.command()
def serve(
    image: ImageOpt = DEFAULT_IMAGE,
    bind: Annotated[list[str] | None, typer.Option(
        "--bind", help="Endpoint to bind (repeatable); default kernel.endpoints.")] = None,
    set_: SetOpt = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines.")] = False,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Run in the background; return once it answers a ping.")] = False,
    ready_timeout: Annotated[float, typer.Option(
        "--ready-timeout", help="With --detach: seconds to wait for the first pong.")
    ] = 300.0,
) -> None:
    """Run the kernel on the image until SIGINT/SIGTERM (its log also goes to
    IMAGE/kernel.log: `batos logs -f`)."""
    from kernel import logs
    from kernel.plugins import run_hooks
    from kernel.server import Kernel

    if detach:
        _serve_detached(image, bind, ready_timeout)
        return
    with Image.open(image, create=True, overrides=overrides_from(set_)) as img:
        logs.configure(img.config["log.level"], log_json or img.config["log.json"],
                       file=image / logs.LOG_FILE)
        run_hooks("batos.serve", img)
        endpoints = bind or [_image_endpoint(e, image) for e in img.config["kernel.endpoints"]]
        Kernel(img, endpoints).serve_forever()


def _serve_detached(image: Path, bind: list[str] | None, ready_timeout: float) -> None:
    from kernel.cli_console import detach
    from kernel.client import endpoint_for

    argv = [a for a in sys.argv[1:] if a != "--detach"]
    ipc = [e for e in bind or [] if e.startswith("ipc://")]
    endpoint = ipc[0] if ipc else endpoint_for(image)
    pid = detach(argv, image, endpoint, ready_timeout)
    print(f"kernel started (pid {pid}) on {endpoint}; its log: batos logs -f --image {image}")


@app.callback()
def _options(
    wait: Annotated[float, typer.Option(
        "--wait", envvar="BATOS_WAIT", min=0,
        help="Clients: wait up to SECONDS for a kernel that is starting.")] = 0.0,
) -> None:
    """batos: a runtime for local, autonomous LLM agents."""
    _settings["wait"] = wait


_settings: dict[str, float] = {"wait": 0.0}


@app.command()
def ping(image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
         server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 5.0,
         as_json: JsonOpt = False) -> None:
    """Check that a kernel answers; prints the round trip."""
    with _client(image, endpoint, key, server_key, timeout) as client:
        rtt = client.ping()
    _out({"ok": True, "endpoint": client.endpoint, "rtt_ms": round(rtt * 1000, 3)}, as_json,
         f"pong from {client.endpoint} in {rtt * 1000:.2f} ms")


@app.command()
def send(
    actor: Annotated[str, typer.Argument(help="Actor name.")],
    selector: Annotated[str, typer.Argument(help="Selector (the handler's name).")],
    args: Annotated[list[str] | None, typer.Argument(
        help="Arguments, each a JSON value ('\"hi\"', 3, '{\"a\": 1}').")] = None,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """Send a message to an actor and print its step's result."""
    values = [_json_arg(a) for a in args or ()]
    with _client(image, endpoint, key, server_key, timeout) as client:
        value = client.send(actor, selector, *values)
    _out({"ok": True, "value": value}, as_json, json.dumps(value, default=repr))


@app.command()
def status(
    ref: Annotated[str | None, typer.Argument(
        help="A mission or message id (any unique start).")] = None,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """The kernel's counters and queues, or the state of one mission/message."""
    with _client(image, endpoint, key, server_key, timeout) as client:
        value = client.status(None if ref is None else _full_ref(client, image, ref))
    _out(value, as_json, json.dumps(value, indent=2, sort_keys=True))


@app.command()
def mission(
    text: Annotated[str, typer.Argument(help="What to ask.")],
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 900.0, as_json: JsonOpt = False,
    profile: Annotated[str | None, typer.Option(
        help="Token budget profile: gpu or cpu (default: the kernel's).")] = None,
) -> None:
    """Send a mission and show its progress live; exit 1 if it FAILED."""
    from kernel import wire
    from kernel.cli_watch import follow_mission
    from kernel.mission_view import MissionView

    options = {"profile": profile} if profile else {}
    record = wire.Mission(text=text, options=options)
    with _client(image, endpoint, key, server_key, timeout) as client:
        follow_mission(client.stream(record, ref=record.id), record.id, as_json,
                       MissionView(record.id), console, err_console)


@app.command()
def watch(
    ref: Annotated[str, typer.Argument(help="A mission or message id (any unique start).")],
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 900.0, as_json: JsonOpt = False,
) -> None:
    """Re-attach to a running or finished mission (or message) until its result:
    its state, age and passes so far with their texts, then what comes."""
    from kernel import wire
    from kernel.cli_refs import mission_entry
    from kernel.cli_watch import follow_mission, seeded_view

    with _client(image, endpoint, key, server_key, timeout) as client:
        ref = _full_ref(client, image, ref)
        view = seeded_view(client, mission_entry(image), ref)  # first: it reads replies
        follow_mission(client.stream(wire.Watch(ref=ref), ref=ref), ref, as_json, view,
                       console, err_console)


@app.command()
def cancel(
    ref: Annotated[str, typer.Argument(help="A mission or message id (any unique start).")],
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """Cancel a running mission (it ends FAILED, "cancelled") or a pending message."""
    with _client(image, endpoint, key, server_key, timeout) as client:
        ref = _full_ref(client, image, ref)
        client.cancel(ref)
    _out({"ok": True, "cancelled": ref}, as_json, f"cancelled {ref}")


@app.command()
def memory(
    limit: Annotated[int, typer.Option(help="How many memories to show.")] = 20,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None, key: KeyOpt = None,
    server_key: ServerKeyOpt = None, timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """What the hippocampus remembers: query, answer, confidence."""
    with _client(image, endpoint, key, server_key, timeout) as client:
        entries = client.send("hippocampus", "list", limit)
    if as_json:
        print(json.dumps(entries, default=repr))
        return
    table = Table("query", "answer", "confidence", title="memory")
    for entry in entries or ():
        table.add_row(_clip(entry.get("query")), _clip(entry.get("answer")),
                      f"{float(entry.get('confidence', 0)):.2f}")
    console.print(table)


def _clip(value: Any, width: int = 60) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def repl(
    image: ImageOpt = DEFAULT_IMAGE,
    at: Annotated[str | None, typer.Option(
        "--at", help="Open the image as it was at this ISO time (read-only).")] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="Open read-write so commit() works (not while a kernel runs).")
    ] = False,
) -> None:
    """Explore the image as Python objects; change it with --write."""
    from kernel.repl import run_repl

    raise typer.Exit(run_repl(image, at, write=write))


@keys_app.command("init")
def keys_init(image: ImageOpt = DEFAULT_IMAGE) -> None:
    """Create the kernel's CURVE keypair in IMAGE/keys (once)."""
    from kernel import auth

    public = auth.init_server_keys(image)
    console.print(f"server public key: {public}")


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="A name for the peer's key.")],
    role: Annotated[str, typer.Option(help="client, actor or admin.")] = "client",
    image: ImageOpt = DEFAULT_IMAGE,
) -> None:
    """Make a keypair for a peer and allow it in ROLE."""
    from kernel import auth

    secret, server_public = auth.add_peer_key(image, name, role)
    console.print(f"allowed {name} as {role}\n"
                  f"give the peer: {secret} (its secret key) and {server_public}")


def _client(image: Path, endpoint: str | None, key: Path | None, server_key: Path | None,
            timeout: float) -> Any:
    import zmq

    from kernel.auth import PeerKeys
    from kernel.client import Client, endpoint_for
    from kernel.endpoints import BadEndpoint, probe

    address = endpoint or endpoint_for(image)
    if _settings["wait"] > 0:
        from kernel.cli_console import wait_for

        wait_for(address, _settings["wait"])
    probe(address)  # a typed error for a missing, stale or forbidden socket, at once
    keys = None
    if key is not None:
        keys = PeerKeys.load(key, server_key or image / "keys" / "server.key")
    try:
        return Client(address, keys=keys, timeout=timeout)
    except zmq.ZMQError as exc:
        raise BadEndpoint(address, exc.strerror) from exc


def _full_ref(client: Any, image: Path, ref: str) -> str:
    from kernel.cli_refs import mission_entry, resolve_ref

    return resolve_ref(client, mission_entry(image), ref)


def _image_endpoint(endpoint: str, image: Path) -> str:
    """The default ipc endpoint follows the image directory."""
    if endpoint == "ipc://live_image/kernel.sock":
        return f"ipc://{image}/kernel.sock"
    return endpoint


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("{", "[", '"') or text.strip() in ("", "-"):
            # meant as JSON: say where it breaks, not how to quote a string
            raise typer.BadParameter(f"{text!r} is not valid JSON: {exc.msg} at "
                                     f"character {exc.pos + 1}") from exc
        raise typer.BadParameter(f"{text!r} is not JSON (a string needs quotes: "
                                 f"'\"{text}\"')") from exc


def _out(value: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(value, default=repr))
    else:
        print(text)


def open_for_reading(image: Path) -> Image:
    """Open an existing image read-only: nothing is committed, a torn tail is left
    where it is, and a running kernel's lock does not matter."""
    return Image.open(image, create=False, read_only=True)


def _setup_logging() -> None:
    level = os.environ.get("BATOS_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point: a typed error becomes one line and its own exit
    code (`kernel.cli_errors`)."""
    from kernel.plugins import run_hooks

    _setup_logging()
    perms.owner_only_umask()  # every file the CLI creates (keys, images, copies) owner-only
    run_hooks("batos.cli", app)  # actor packages add their own commands
    cli_errors.flags_without_types()
    try:
        try:
            app()
        except KernelUnreachable as exc:  # silent: tell a stale socket from a busy kernel
            from kernel.endpoints import diagnose

            diagnose(exc.endpoint)
            raise
    except BatosError as exc:
        err_console.print(f"[red]error:[/] {escape(cli_errors.one_line(exc))}", soft_wrap=True)
        sys.exit(cli_errors.exit_code(exc))
