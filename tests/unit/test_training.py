"""Persona training: the data files, export from the image, masking, a tiny training run."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from actors import prompts, training
from actors.cli import adapter_table, register
from actors.mission import Mission, state_prototype
from actors.verdicts import parse_verdict
from kernel.image import Image

REPO = Path(__file__).resolve().parents[2]
PERSONA_DIR = REPO / "scripts" / "personas"
SYSTEMS = {"router": prompts.ROUTER, "drafter": prompts.DRAFTER, "critic": prompts.CRITIC,
           "synthesizer": prompts.SYNTHESIZER, "auditor": prompts.AUDITOR}
ROUTE_TRUE = '{"needs_rag": true, "rag_query": "capital cities", "needs_code": false, "code": ""}'


def load_script() -> ModuleType:
    """scripts/train_persona.py as a module (scripts/ is not a package)."""
    name = "train_persona"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "train_persona.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being defined
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- the hand-written data -------------------------------------------------------------


def rows_of(persona: str) -> list[dict[str, Any]]:
    lines = (PERSONA_DIR / f"{persona}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("persona", list(SYSTEMS))
def test_data_file_is_chat_format_with_the_role_prompt(persona: str) -> None:
    rows = rows_of(persona)
    assert 40 <= len(rows) <= 80
    for row in rows:
        roles = [turn["role"] for turn in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        system, user, answer = (turn["content"] for turn in row["messages"])
        assert system == SYSTEMS[persona]
        assert user.strip() and answer.strip() and answer == answer.strip()
    users = [row["messages"][1]["content"] for row in rows]
    assert len(set(users)) == len(users), "duplicate prompts"


@pytest.mark.parametrize("persona", ["router", "drafter", "critic", "synthesizer"])
def test_user_messages_are_built_as_the_pipeline_builds_them(persona: str) -> None:
    for row in rows_of(persona):
        user = row["messages"][1]["content"]
        assert user.startswith("Question:\n")
        question = user.split("\n\n")[0].removeprefix("Question:\n")
        assert question and user == user.strip()
        if persona == "router":
            assert user == prompts.route_user(question)


def test_router_answers_are_valid_plans() -> None:
    kinds = {"none": 0, "rag": 0, "code": 0}
    for row in rows_of("router"):
        answer = row["messages"][2]["content"]
        plan, how = prompts.parse_route(answer)
        assert how == "json", answer
        assert list(json.loads(answer)) == list(prompts.NO_TOOLS)
        assert plan["needs_rag"] == bool(plan["rag_query"])
        assert plan["needs_code"] == bool(plan["code"])
        if plan["needs_code"]:
            compile(plan["code"], "<router code>", "exec")
        kinds["rag" if plan["needs_rag"] else "code" if plan["needs_code"] else "none"] += 1
    assert kinds["none"] > kinds["rag"] >= 8 and kinds["code"] >= 8


def test_critic_opens_with_a_verdict_and_keeps_often_enough() -> None:
    answers = [row["messages"][2]["content"] for row in rows_of("critic")]
    verdicts = [parse_verdict(answer) for answer in answers]
    keeps = [a for a, v in zip(answers, verdicts, strict=True) if v.decision == "keep"]
    assert all(a == "Verdict: keep" for a in keeps)  # keep stands alone
    assert 0.3 <= len(keeps) / len(answers) <= 0.6  # not pushed to "wrong"
    for answer, verdict in zip(answers, verdicts, strict=True):
        if verdict.decision != "keep":
            assert verdict.revise and answer.startswith("Verdict: revise\n"), answer
            assert all(line.startswith("- ") for line in answer.splitlines()[1:]), answer


def test_auditor_reads_figures_as_the_audit_writes_them() -> None:
    for row in rows_of("auditor"):
        user, answer = row["messages"][1]["content"], row["messages"][2]["content"]
        assert user.startswith("System figures:\n- missions_by_state: ")
        assert user.endswith("\n\nAssess briefly.")
        assert "Action:" in answer and 2 <= answer.count(". ") + 1 <= 4


# -- export from the image -------------------------------------------------------------


def add_mission(root: Any, mission_id: str, text: str, state: str = "COMPLETE",
                **slots: Any) -> None:
    mission = Mission(mission_id, text, {})
    mission.set_slot("state*", state_prototype(root, state))
    for name, value in slots.items():
        setattr(mission, name, value)
    root["missions"][mission_id] = mission


def plan(parsed: str = "json", **fields: Any) -> dict[str, Any]:
    return {**prompts.NO_TOOLS, **fields, "parsed": parsed, "notes": []}


@pytest.fixture
def history(image: Image) -> Image:
    """Missions as the pipeline leaves them: good, failed, weak, remembered, retried."""
    with image.transaction() as root:
        add_mission(root, "m1", "What is the capital of France?",
                    plan=plan(needs_rag=True, rag_query="capital cities"),
                    draft="Paris.", critique="- Too short.",
                    candidates=[{"answer": "Paris is the capital of France.", "confidence": 0.8}],
                    answer="Paris is the capital of France.", confidence=0.8)
        add_mission(root, "m2", "Broken question", state="FAILED", plan=plan(),
                    draft="x", error="boom")
        add_mission(root, "m3", "Weak question", plan=plan(), draft="d", critique="c",
                    candidates=[{"answer": "a", "confidence": 0.3}], answer="a",
                    confidence=0.3)
        add_mission(root, "m4", "Remembered question", answer="From memory.",
                    confidence=0.95, from_memory=True)
        add_mission(root, "m5", "Who wrote Hamlet?", plan=plan(parsed="no_tools"),
                    recalled={"query": "Who wrote Hamlet", "answer": "Marlowe.",
                              "confidence": 0.4},
                    draft="Marlowe wrote it.", critique="- Wrong author.", round=1,
                    candidates=[{"answer": "Marlowe.", "confidence": 0.2},
                                {"answer": "William Shakespeare.", "confidence": 0.7}],
                    answer="William Shakespeare.", confidence=0.7)
        add_mission(root, "m6", "How many legs has a spider?", plan=plan(), draft="Six.",
                    critique="- Still wrong.", round=2,
                    candidates=[{"answer": "Eight legs.", "confidence": 0.5},
                                {"answer": "Six legs.", "confidence": 0.3},
                                {"answer": "Ten.", "confidence": 0.1}],
                    answer="Eight legs.", confidence=0.5)
    return image


def chat(persona: str, mission: str, system: str, user: str, answer: str) -> dict[str, Any]:
    return {"persona": persona, "mission": mission,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


M1_ROWS = [
    chat("router", "m1", prompts.ROUTER, "Question:\nWhat is the capital of France?",
         ROUTE_TRUE),
    chat("drafter", "m1", prompts.DRAFTER, "Question:\nWhat is the capital of France?",
         "Paris."),
    chat("critic", "m1", prompts.CRITIC,
         "Question:\nWhat is the capital of France?\n\nAnswer to review:\nParis.",
         "- Too short."),
    chat("synthesizer", "m1", prompts.SYNTHESIZER,
         "Question:\nWhat is the capital of France?\n\nDraft:\nParis.\n\n"
         "Critique:\n- Too short.", "Paris is the capital of France."),
]
M5_ROWS = [  # no router row: its plan was the "no tools" fallback
    chat("drafter", "m5", prompts.DRAFTER,
         "Question:\nWho wrote Hamlet?\n\nContext:\nMarlowe.\n"
         "(An earlier answer to a similar question; it may be wrong.)", "Marlowe wrote it."),
    chat("critic", "m5", prompts.CRITIC,
         "Question:\nWho wrote Hamlet?\n\nDraft:\nMarlowe wrote it.\n\n"
         "Answer to review (judged weak):\nMarlowe.", "- Wrong author."),
    chat("synthesizer", "m5", prompts.SYNTHESIZER,
         "Question:\nWho wrote Hamlet?\n\nDraft:\nMarlowe wrote it.\n\n"
         "Previous final answer (judged weak):\nMarlowe.\n\nCritique:\n- Wrong author.",
         "William Shakespeare."),
]
M6_ROWS = [  # no synthesizer row: the answer came from round 0, whose critique is gone
    chat("router", "m6", prompts.ROUTER, "Question:\nHow many legs has a spider?",
         json.dumps(prompts.NO_TOOLS)),
    chat("drafter", "m6", prompts.DRAFTER, "Question:\nHow many legs has a spider?", "Six."),
    chat("critic", "m6", prompts.CRITIC,
         "Question:\nHow many legs has a spider?\n\nDraft:\nSix.\n\n"
         "Answer to review (judged weak):\nSix legs.", "- Still wrong."),
]


def exported(image: Image, **kwargs: Any) -> tuple[list[dict[str, Any]], training.ExportStats]:
    rows: list[dict[str, Any]] = []

    class Sink:
        def write(self, text: str) -> int:
            rows.append(json.loads(text))
            return len(text)

    stats = training.export_training(image, out=Sink(), **kwargs)  # type: ignore[arg-type]
    return rows, stats


def test_export_writes_exactly_the_rebuildable_passes(history: Image) -> None:
    rows, stats = exported(history)
    assert rows == M1_ROWS + M5_ROWS
    assert stats.to_dict() == {"missions": 6, "used": 2, "total_rows": 7,
                               "rows": {"router": 1, "drafter": 2, "critic": 2,
                                        "synthesizer": 2}}


def test_export_threshold_and_persona_filter(history: Image) -> None:
    rows, _ = exported(history, min_confidence=0.4)
    assert rows == M1_ROWS + M5_ROWS + M6_ROWS
    rows, stats = exported(history, min_confidence=0.75, persona="critic")
    assert rows == [M1_ROWS[2]] and stats.used == 1


def test_exported_rows_train_like_the_hand_written_ones(history: Image) -> None:
    script = load_script()
    for row in exported(history)[0]:
        assert script.check_messages(row["messages"], "row") == row["messages"]
        if row["persona"] == "router":
            assert prompts.parse_route(row["messages"][2]["content"])[1] == "json"


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_export_reads_an_image_a_kernel_holds(history: Image, tmp_path: Path) -> None:
    out = tmp_path / "drafter.jsonl"  # `history` keeps the image open: read-only it is
    result = CliRunner().invoke(cli(), ["export-training", "--image", str(history.directory),
                                        "--out", str(out), "--persona", "drafter"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [M1_ROWS[1], M5_ROWS[0]]
    script = load_script()
    assert len(script.load_rows(out, "drafter")) == 2
    assert script.load_rows(out, "critic") == []


def test_cli_export_default_threshold_is_the_module_one() -> None:
    import inspect

    from actors.cli import export_training

    default = inspect.signature(export_training).parameters["min_confidence"].default
    assert default == training.DEFAULT_MIN_CONFIDENCE


def test_cli_rejects_an_unknown_persona(history: Image) -> None:
    result = CliRunner().invoke(cli(), ["export-training", "--image", str(history.directory),
                                        "--persona", "oracle"])
    assert result.exit_code != 0


def test_cli_ingest_of_an_empty_staging_folder(tmp_path: Path) -> None:
    Image.open(tmp_path / "image").close()
    (tmp_path / "staging").mkdir()
    result = CliRunner().invoke(cli(), ["adapters", "ingest", "--image", str(tmp_path / "image"),
                                        "--folder", str(tmp_path / "staging"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outcomes"] == []


def test_adapter_table_shows_every_key() -> None:
    rows: list[dict[str, Any]] = [
        {"name": "router", "version": 2, "tier": "hot", "size_bytes": 1_843_000, "hits": 5,
         "misses": 1, "last_used": None, "mean_swap_ms": 3.25, "pinned": True},
        {"name": "critic", "extra": "x"}]
    console = Console(record=True, width=200)
    console.print(adapter_table(rows))
    text = console.export_text()
    for word in ("name", "extra", "router", "hot", "1.8 MB", "3.2", "yes", "critic"):
        assert word in text


# -- tokenizing and masking ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_model import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "lm")


CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "The capital of France is Paris."}]


def test_masking_covers_exactly_the_prompt() -> None:
    from tests.helpers.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    example = load_script().encode_example(tokenizer, CONVERSATION)
    prompt = tokenizer.apply_chat_template(CONVERSATION[:-1], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert example.input_ids[:n] == prompt_ids
    assert example.labels[:n] == [-100] * n
    assert example.labels[n:] == example.input_ids[n:] and -100 not in example.labels[n:]
    assert example.prompt_tokens == n
    assert tokenizer.decode(example.input_ids[n:]) == "The capital of France is Paris.<|im_end|>\n"


def test_long_examples_are_cut_or_skipped() -> None:
    from tests.helpers.tiny_model import build_tokenizer

    tokenizer, script = build_tokenizer(), load_script()
    whole = script.encode_example(tokenizer, CONVERSATION)
    n = whole.prompt_tokens
    cut = script.encode_example(tokenizer, CONVERSATION, max_tokens=n + 2)
    assert cut.input_ids == whole.input_ids[:n + 2] and cut.labels == whole.labels[:n + 2]
    assert script.encode_example(tokenizer, CONVERSATION, max_tokens=n) is None


def test_shared_prefix_gives_the_same_loss_and_gradients(tiny_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    script = load_script()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    torch.manual_seed(0)
    model = script.with_lora(AutoModelForCausalLM.from_pretrained(str(tiny_dir)), 4)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapter matter
            param.data.normal_(0.0, 0.1)
    model.eval()  # no dropout: both ways must agree exactly
    questions = ["What is the capital of Italy?", "Why is the sky blue?", "Hi"]
    batch = [script.encode_example(tokenizer, [CONVERSATION[0],
                                               {"role": "user", "content": q},
                                               {"role": "assistant", "content": "Rome, yes."}])
             for q in questions]
    assert script.shared_prefix(batch) > 0
    results = []
    for share in (True, False):
        loss, count = script.batch_loss(model, batch, 2, share_prefix=share)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        results.append((float(loss.detach()), count, grads))
    (shared, n1, g1), (whole, n2, g2) = results
    assert n1 == n2 == sum(len(e.labels) - e.prompt_tokens for e in batch)
    assert shared == pytest.approx(whole, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2, strict=True))


def test_two_steps_write_an_adapter_peft_loads(tiny_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    script = load_script()
    data = tmp_path / "router.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows_of("router")[:6]),
                    encoding="utf-8")
    out = tmp_path / "router"
    args = script.parse_args(["--persona", "router", "--data", str(data), "--out", str(out),
                              "--base", str(tiny_dir), "--max-steps", "2", "--batch-size",
                              "2", "--threads", "1", "--seed", "7"])
    lines: list[str] = []
    result = script.run(args, say=lines.append)
    assert result.steps == 2 and result.examples == 6
    assert [line.split()[:2] for line in lines if line.startswith("step")] == [
        ["step", "1/2"], ["step", "2/2"]]
    assert any("seed 7" in line for line in lines)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == script.BASE_MODEL_ID
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert sorted(config["target_modules"]) == sorted(script.TARGET_MODULES)
    assert safetensors_dtypes(out / "adapter_model.safetensors") == {"BF16"}
    assert result.adapter_bytes == (out / "adapter_model.safetensors").stat().st_size
    assert "router persona adapter" in (out / "README.md").read_text()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_dir)),
                                      str(out))
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_training_on_exported_rows(history: Image, tiny_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "exported.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        training.export_training(history, out=handle)
    script = load_script()
    args = script.parse_args(["--persona", "drafter", "--data", str(data), "--out",
                              str(tmp_path / "drafter"), "--base", str(tiny_dir),
                              "--epochs", "1", "--threads", "1"])
    result = script.run(args, say=lambda line: None)
    assert result.examples == 2 and result.steps == 1
    assert (tmp_path / "drafter" / "adapter_model.safetensors").is_file()


def safetensors_dtypes(path: Path) -> set[str]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_rows_of_another_persona_are_skipped(tmp_path: Path) -> None:
    script = load_script()
    data = tmp_path / "mixed.jsonl"
    rows = [{"persona": "critic", "messages": CONVERSATION},
            {"persona": "drafter", "messages": CONVERSATION}, {"messages": CONVERSATION}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert len(script.load_rows(data, "drafter")) == 2
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(script.TrainingDataError):
        script.load_rows(data, "drafter")
