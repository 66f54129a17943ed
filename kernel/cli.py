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
from rich.table import Table

from kernel import config as config_mod
from kernel.errors import KernelError
from kernel.image import DEFAULT_IMAGE, Image, ImageInfo, parse_oid
from prototypes.errors import BatosError

app = typer.Typer(help="batos: a runtime for local, autonomous LLM agents.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
image_app = typer.Typer(help="Inspect the living image.", no_args_is_help=True)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
app.add_typer(image_app, name="image")
app.add_typer(config_app, name="config")

console = Console()
err_console = Console(stderr=True)

ImageOpt = Annotated[Path, typer.Option(
    "--image", envvar="BATOS_IMAGE", help="Image directory (or BATOS_IMAGE).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting: section.key=value (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def overrides_from(assignments: list[str] | None) -> dict[str, Any]:
    """`--set` flags as a dict of dotted keys (values are typed later)."""
    return dict(config_mod.parse_assignment(a) for a in assignments or ())


@app.command()
def init(image: ImageOpt = DEFAULT_IMAGE, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Create (or open) the image, run genesis and print its summary."""
    with Image.open(image, create=True, overrides=overrides_from(set_)) as img:
        _print_info(img.info(), as_json)


@image_app.command("info")
def image_info(image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False) -> None:
    """Object counts by kind, storage size and the last transaction."""
    with open_for_reading(image) as img:
        _print_info(img.info(), as_json)


@image_app.command("history")
def image_history(
    oid: Annotated[str, typer.Argument(help="Object id, hex (0x1a) or #decimal.")],
    image: ImageOpt = DEFAULT_IMAGE,
    size: Annotated[int, typer.Option(help="Revisions to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The committed revisions of one object, newest first."""
    with open_for_reading(image) as img:
        revisions = img.history(parse_oid(oid), size=size)
    if as_json:
        print(json.dumps([{"tid": r.tid, "time": r.time.isoformat(), "user": r.user,
                           "description": r.description, "size": r.size}
                          for r in revisions]))
        return
    table = Table("tid", "time (UTC)", "size", "description", title=f"history of {oid}")
    for r in revisions:
        table.add_row(r.tid, r.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], str(r.size),
                      r.description)
    console.print(table)


@config_app.command("show")
def config_show(image: ImageOpt = DEFAULT_IMAGE, set_: SetOpt = None) -> None:
    """Print the configuration as resolved from file, environment and flags."""
    cfg = config_mod.load(image if image.exists() else None, overrides_from(set_))
    print(config_mod.render(dict(cfg)), end="")


def open_for_reading(image: Path) -> Image:
    """Open an existing image; read-only when a kernel holds it."""
    from kernel.errors import ImageLocked

    try:
        return Image.open(image, create=False)
    except ImageLocked:
        return Image.open(image, create=False, read_only=True)


def _print_info(info: ImageInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_info_dict(info)))
        return
    table = Table("kind", "objects", title=f"living image {info.location}")
    for kind, count in info.objects_by_kind.items():
        table.add_row(kind, str(count))
    console.print(table)
    console.print(f"objects: {sum(info.objects_by_kind.values())}   "
                  f"storage: {_human_bytes(info.storage_bytes)}   "
                  f"last transaction: {_when(info.last_transaction)}   "
                  f"created: {_when(info.created)}"
                  + ("   [yellow](read-only: a kernel holds the image)[/]"
                     if info.read_only else ""))


def _info_dict(info: ImageInfo) -> dict[str, Any]:
    return {"location": info.location, "objects_by_kind": info.objects_by_kind,
            "objects": sum(info.objects_by_kind.values()),
            "storage_bytes": info.storage_bytes, "last_tid": info.last_tid,
            "last_transaction": info.last_transaction.isoformat()
            if info.last_transaction else None,
            "created": info.created.isoformat() if info.created else None,
            "read_only": info.read_only}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _setup_logging() -> None:
    level = os.environ.get("BATOS_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point: typed errors become one line and exit code 2."""
    _setup_logging()
    try:
        app()
    except BatosError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(2 if isinstance(exc, KernelError) else 1)
