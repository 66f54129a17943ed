"""`batos knowledge`: ingest, search, list, remove and count the catalog's documents.

    batos knowledge ingest PATH...       files, folders, globs (a progress bar)
    batos knowledge search QUERY [-k 4] [--mode hybrid|bm25|dense]
    batos knowledge ls | rm DOC | stats  (DOC: a path or the number `ls` shows)

Every command takes `--image DIR` and `--json`. When a kernel holds the image
the command goes through its `knowledge` actor (an ingest is then one step
per batch, embedded by the kernel's encoder); otherwise it opens the image
itself, as `batos adapters ingest` does, and loads the image's MiniLM.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from kernel.cli import ImageOpt, JsonOpt, console, err_console
from kernel.image import DEFAULT_IMAGE

BATCH_TIMEOUT_S = 600.0  # one batch: 256 units through MiniLM on a busy CPU

app = typer.Typer(help="The knowledge catalog: documents that ground missions' answers.")

Call = Callable[..., Any]


@contextmanager
def _catalog_calls(image: Path, writing: bool) -> Iterator[Call]:
    """`call(selector, *args)`: the kernel's `knowledge` actor, or the image opened here."""
    from kernel.errors import ImageLocked
    from kernel.image import Image

    try:
        img = Image.open(image, create=False)
    except ImageLocked:
        yield _kernel_call(image)
        return
    with img:
        yield _local_call(img, writing)


def _kernel_call(image: Path) -> Call:
    from kernel.cli import _client

    err_console.print("[dim]a kernel holds the image: its knowledge actor answers[/]")

    def call(selector: str, *args: Any) -> Any:
        with _client(image, None, None, None, 5.0) as client:
            client.ping()
            client.timeout = BATCH_TIMEOUT_S
            return client.send("knowledge", selector, *args)

    return call


def _local_call(img: Any, writing: bool) -> Call:
    from actors.knowledge import actor as knowledge_actor
    from actors.knowledge import catalog as catalog_mod
    from actors.knowledge import ingest, retrieval
    from actors.knowledge.encoder import ImageEncoder, encode

    loaded: list[ImageEncoder] = []

    def encoder(texts: Any) -> Any:
        if not loaded:
            loaded.append(ImageEncoder.load(img))
        return encode(texts, loaded[0])

    def call(selector: str, *args: Any) -> Any:
        with img.transaction(f"knowledge {selector}") as root:
            catalog = catalog_mod.catalog_of(root)
            if selector == "ingest_batch":
                return ingest.ingest_batch(root, args[0], encoder).to_dict()
            if selector == "remove":
                found = catalog_mod.ensure_catalog(root)
                return found.remove(found.find(args[0]).path).describe()
            if catalog is None:
                return [] if selector in ("search", "list") else knowledge_actor.empty_stats()
            if selector == "search":
                query, k, mode = args
                return [h.describe() for h in retrieval.search(catalog, query, encoder, k, mode)]
            if selector == "list":
                return [d.describe() for d in catalog.iter_documents()]
            return catalog.stats()

    return call


# -- commands ------------------------------------------------------------------------


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or globs.")],
    image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False,
) -> None:
    """Take files into the catalog (unchanged ones are skipped; unreadable ones named)."""
    from actors.knowledge import ingest

    files = ingest.discover(paths)
    with _catalog_calls(image, True) as call, _progress(as_json, len(files)) as advance:
        outcomes = ingest.drive(files, lambda window: call("ingest_batch", window), advance)
    skipped = [o for o in outcomes if o["status"] == "skipped"]
    if as_json:
        print(json.dumps({"files": len(files), "outcomes": outcomes}))
    else:
        console.print(outcome_table(outcomes))
    for outcome in skipped:
        err_console.print(f"[yellow]skipped {outcome['path']}: {outcome['error_kind']}: "
                          f"{outcome['error']}[/]")


@contextmanager
def _progress(quiet: bool, total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    if quiet:
        yield lambda report: None
        return
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(),
               TextColumn("files  {task.fields[units]} units embedded"))
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("ingest", total=total, units=0)
        embedded = [0]

        def advance(report: dict[str, Any]) -> None:
            embedded[0] += int(report["units"])
            bar.update(task, advance=int(report["consumed"]), units=embedded[0])

        yield advance


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many chunks.")] = 4,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, bm25 or dense.")] = "hybrid",
    image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False,
) -> None:
    """The best chunks for QUERY, with their document, offsets and score."""
    from actors.knowledge.retrieval import MODES

    if mode not in MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(MODES)}",
                                 param_hint="--mode")
    with _catalog_calls(image, False) as call:
        hits = call("search", query, k, mode)
    if as_json:
        print(json.dumps(hits))
        return
    table = Table("#", "score", "document", "chars", "text", title=f"search {query!r}",
                  box=box.SIMPLE_HEAD)
    for number, hit in enumerate(hits, start=1):
        table.add_row(str(number), f"{hit['score']:.4f}", hit["path"],
                      f"{hit['start']}-{hit['end']}", _clip(hit["text"]))
    console.print(table)


@app.command("ls")
def ls_cmd(image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False) -> None:
    """The documents in the catalog."""
    with _catalog_calls(image, False) as call:
        rows = call("list")
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("#", "document", "type", "bytes", "chunks", "ingested", box=box.SIMPLE_HEAD)
    for row in rows:
        when = dt.datetime.fromtimestamp(row["ingested"]).strftime("%Y-%m-%d %H:%M")
        table.add_row(str(row["number"]), row["path"], row["type"], str(row["size"]),
                      str(row["chunks"]), when)
    if not rows:
        table.caption = "no documents (batos knowledge ingest PATH)"
    console.print(table)


@app.command("rm")
def rm_cmd(
    ref: Annotated[str, typer.Argument(help="A document's path or its number in `ls`.")],
    image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False,
) -> None:
    """Remove a document, its chunks and their index entries."""
    from actors.knowledge.errors import UnknownDocument
    from kernel.client import RemoteError

    target = ref if ref.isdigit() or not Path(ref).exists() else str(Path(ref).resolve())
    try:
        with _catalog_calls(image, True) as call:
            removed = call("remove", target)
    except (UnknownDocument, RemoteError) as exc:  # the kernel's answer is a RemoteError
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(removed))
    else:
        console.print(f"removed {removed['path']} ({removed['chunks']} chunks)")


@app.command("stats")
def stats_cmd(image: ImageOpt = DEFAULT_IMAGE, as_json: JsonOpt = False) -> None:
    """Documents, chunks, bytes and indexed words."""
    with _catalog_calls(image, False) as call:
        stats = call("stats")
    if as_json:
        print(json.dumps(stats))
    else:
        console.print("   ".join(f"{key}: {value}" for key, value in stats.items()))


def outcome_table(outcomes: list[dict[str, Any]]) -> Table:
    table = Table("document", "status", "chunks", box=box.SIMPLE_HEAD)
    for outcome in outcomes:
        table.add_row(outcome["path"], outcome["status"], str(outcome["chunks"]))
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    table.caption = ", ".join(f"{n} {status}" for status, n in counts.items())
    return table


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"
