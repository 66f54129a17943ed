"""`batos image ...`: look at the living image, check it, repair a copy of it.

Every command here opens the image read-only: none commits, none truncates a
torn tail, and each works while a kernel holds the image. `verify` reads the
whole file; `recover` writes a repaired copy into a new directory and never
changes the original.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kernel.errors import DamagedImage, ImageError
from kernel.image import DEFAULT_IMAGE, Image, ImageInfo, parse_oid
from kernel.integrity import VerifyReport

image_app = typer.Typer(help="Inspect, verify and repair the living image.",
                        no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

ImageOpt = Annotated[Path, typer.Option(
    "--image", envvar="BATOS_IMAGE", help="Image directory (or BATOS_IMAGE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@image_app.command("info")
def image_info(image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False) -> None:
    """Object counts by kind, storage size and the last transaction."""
    with Image.open(image, create=False, read_only=True) as img:
        print_info(img.info(), as_json)


@image_app.command("history")
def image_history(
    oid: Annotated[str, typer.Argument(help="Object id, hex (0x1a) or #decimal.")],
    image: ImageOpt = DEFAULT_IMAGE,
    size: Annotated[int, typer.Option(help="Revisions to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The committed revisions of one object, newest first."""
    with Image.open(image, create=False, read_only=True) as img:
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


@image_app.command("verify")
def image_verify(image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False) -> None:
    """Check every transaction, object record, pickle and reference of Data.fs.

    Exits 0 when the file is sound, 2 with the first problem named when it is not.
    """
    from kernel.integrity import verify

    data_fs = image / "Data.fs"
    if not data_fs.is_file():
        raise ImageError(str(image), "no Data.fs here (run `batos init`)")
    report = verify(data_fs)
    _print_report(report, as_json)
    if not report.ok:
        first = report.problems[0]
        raise DamagedImage(str(data_fs), first.position,
                           f"{first.problem} ({len(report.problems)} problems in all)")


@image_app.command("recover")
def image_recover(
    out: Annotated[Path, typer.Option("--out", help="A new directory for the repaired copy.")],
    image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False,
) -> None:
    """Write a repaired copy of the image into --out (ZODB's fsrecover); the original
    is only read. Transactions that cannot be read whole are left out."""
    from kernel.recover import recover_image

    report = recover_image(image, out)
    summary = {"source": report.source, "target": report.target,
               "source_bytes": report.source_bytes, "target_bytes": report.target_bytes,
               "dropped_bytes": report.dropped_bytes, "verified": _report_dict(report.verified)}
    if as_json:
        print(json.dumps(summary))
        return
    console.print(f"repaired copy written to {report.target}: kept "
                  f"{report.target_bytes} of {report.source_bytes} bytes "
                  f"({report.verified.transactions} transactions, "
                  f"{report.verified.objects} objects); the original is unchanged")
    _print_report(report.verified, False)


def print_info(info: ImageInfo, as_json: bool) -> None:
    """What `batos init` and `batos image info` print."""
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
                  + ("   [yellow](opened read-only)[/]" if info.read_only else ""))


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_report_dict(report)))
        return
    verdict = "[green]sound[/]" if report.ok else f"[red]{len(report.problems)} problems[/]"
    console.print(f"{report.path}: {verdict}: {report.transactions} transactions, "
                  f"{report.records} object records, {report.objects} objects, "
                  f"{report.size} bytes")
    if report.torn_tail_at is not None:
        console.print(f"a transaction cut short by a crash starts at byte "
                      f"{report.torn_tail_at}; the next `batos serve` sets it aside")
    for problem in report.problems[:20]:
        oid = f" (object 0x{problem.oid:x})" if problem.oid is not None else ""
        console.print(f"  byte {problem.position}: {problem.problem}{oid}")


def _report_dict(report: VerifyReport) -> dict[str, Any]:
    return {"path": report.path, "ok": report.ok, "size": report.size,
            "transactions": report.transactions, "records": report.records,
            "objects": report.objects, "torn_tail_at": report.torn_tail_at,
            "problems": [{"position": p.position, "problem": p.problem, "oid": p.oid}
                         for p in report.problems]}


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
