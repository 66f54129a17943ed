"""`batos methods`: the generated methods in the image, and the generative switch.

    batos methods [--json]                          list every generated method
    batos methods show OWNER SELECTOR [--json]      its source and provenance
    batos methods rm OWNER SELECTOR                 remove it (history keeps it)
    batos methods generative OWNER --on|--off       the generative doesNotUnderstand
    batos methods refused [--json]                  the latest refused learns

OWNER is `actors/NAME` or `prototypes/NAME`. With a kernel running, each
command is a message to its `learner` actor (one step); without one, it
reads or changes the image directly. `batos image history OID` (the REPL's
`history`) shows a method's versions by its oid, which `show` prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.syntax import Syntax
from rich.table import Table

from kernel.cli import console, err_console
from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, TimeoutOpt
from kernel.image import DEFAULT_IMAGE

LEARNER = "learner"

methods_app = typer.Typer(help="Methods the image learned (generative doesNotUnderstand).")

OwnerArg = Annotated[str, typer.Argument(help="actors/NAME or prototypes/NAME")]
SelectorArg = Annotated[str, typer.Argument(help="the method's selector")]


@methods_app.callback(invoke_without_command=True)
def methods_list(ctx: typer.Context, image: ImageOpt = DEFAULT_IMAGE,
                 endpoint: EndpointOpt = None, timeout: TimeoutOpt = 10.0,
                 as_json: JsonOpt = False) -> None:
    """List every generated method: owner, selector, mission, model, time."""
    if ctx.invoked_subcommand is not None:
        return
    from actors.code import methods

    rows = _call(image, endpoint, timeout, "methods", methods.rows, write=False)
    if as_json:
        print(json.dumps(rows, default=repr))
        return
    table = Table("owner", "selector", "mission", "model", "learned", "first line",
                  title="generated methods", box=box.SIMPLE_HEAD)
    for row in rows:
        table.add_row(row["owner"], row["selector"], str(row["mission"] or "-"),
                      str(row["model"] or "-"), _when(row["time"]), row["first_line"])
    if not rows:
        table.caption = "none yet (turn one on: batos methods generative actors/NAME --on)"
    console.print(table)


@methods_app.command("show")
def methods_show(owner: OwnerArg, selector: SelectorArg, image: ImageOpt = DEFAULT_IMAGE,
                 endpoint: EndpointOpt = None, timeout: TimeoutOpt = 10.0,
                 as_json: JsonOpt = False) -> None:
    """One generated method's source and provenance."""
    shown = _on_method("show", owner, selector, image, endpoint, timeout)
    _answer(shown, as_json, lambda found: _print_method(owner, selector, found))


@methods_app.command("rm")
def methods_rm(owner: OwnerArg, selector: SelectorArg, image: ImageOpt = DEFAULT_IMAGE,
               endpoint: EndpointOpt = None, timeout: TimeoutOpt = 10.0,
               as_json: JsonOpt = False) -> None:
    """Remove a generated method (its versions stay in the image's history)."""
    removed = _on_method("forget", owner, selector, image, endpoint, timeout)
    _answer(removed, as_json,
            lambda gone: console.print(f"removed {owner}.{selector} (oid {gone['oid']})"))


@methods_app.command("generative")
def methods_generative(
    owner: OwnerArg,
    on: Annotated[bool, typer.Option("--on/--off", help="turn it on or off")] = True,
    image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False,
) -> None:
    """Let an actor (or every child of a prototype) learn the selectors it lacks."""
    from actors.code import methods

    done = _call(image, endpoint, timeout, "generative", methods.set_generative, owner, on,
                 write=True)
    _answer(done, as_json, lambda _done: console.print(
        f"{owner}: generative {'on' if on else 'off'}"))


@methods_app.command("refused")
def methods_refused(image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None,
                    timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False) -> None:
    """The latest learns the guardian refused, with its reasons."""
    rows = _call(image, endpoint, timeout, "refused",
                 lambda root: [dict(e) for e in root["actors"][LEARNER].refusals], write=False)
    if as_json:
        print(json.dumps(rows, default=repr))
        return
    for row in rows:
        console.print(f"[bold]{row['actor']}.{row['selector']}[/] {_when(row['time'])}")
        for reason in row["reasons"]:
            console.print(f"  {reason}")
    if not rows:
        console.print("no refused learns")


def _on_method(selector: str, owner: str, name: str, image: Path, endpoint: str | None,
               timeout: float) -> Any:
    """The learner's `show` or `forget` of the method `owner.name` (see `_call`)."""
    from actors.code import methods

    local, write = {"show": (methods.show, False), "forget": (methods.remove, True)}[selector]
    return _call(image, endpoint, timeout, selector, local, owner, name, write=write)


def _answer(value: Any, as_json: bool, show: Callable[[Any], None]) -> None:
    """Print `value`: one JSON object with `--json`, else as `show` writes it."""
    if as_json:
        print(json.dumps(value, default=repr))
    else:
        show(value)


def _print_method(owner: str, selector: str, shown: dict[str, Any]) -> None:
    console.print(f"[bold]{owner}.{selector}[/]  oid {shown['oid']}  mission "
                  f"{shown['mission']}  model {shown['model']}  {_when(shown['time'])}")
    console.print(Syntax(shown["source"], "python"))


def _call(image: Path, endpoint: str | None, timeout: float, selector: str,
          local: Callable[..., Any], *args: Any, write: bool) -> Any:
    """Through the kernel's learner when a kernel runs; else on the image itself."""
    from actors.code.errors import LearnError
    from kernel.cli import _client
    from kernel.client import KernelUnreachable, RemoteError

    try:
        with _client(image, endpoint, None, None, timeout) as client:
            return client.send(LEARNER, selector, *args)
    except KernelUnreachable:
        if endpoint is not None:
            raise
    except RemoteError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    with _root(image, write) as root:
        try:
            return local(root, *args)
        except LearnError as exc:  # shown like the kernel's reply
            err_console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None


@contextlib.contextmanager
def _root(image: Path, write: bool) -> Iterator[Any]:
    from kernel.cli import open_for_reading
    from kernel.image import Image

    if write:
        with Image.open(image, create=False) as img, img.transaction("batos methods") as root:
            yield root
    else:
        with open_for_reading(image) as img, img.reading() as root:
            yield root


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
