"""Models in a real FileStorage image: ingestion as blobs, loading in place, bad directories."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from ZODB.blob import Blob

from actors import models
from actors.engine import load_from_image
from actors.llm import ChatMessage, GenerationRequest
from actors.models import BadModelDirectory, ModelRecord, ingest_model_dir
from kernel.blobs import sha256_of
from kernel.image import Image
from tests.helpers.tiny_model import build_tiny_embedding_dir, build_tiny_model_dir

QUESTION = (ChatMessage("system", "Answer in one short sentence."),
            ChatMessage("user", "What is the capital of France?"))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_model_dir(root / "lm"), build_tiny_embedding_dir(root / "emb")


def last_tid(image: Image) -> bytes:
    return bytes(image.db.storage.lastTransaction())


def ingest_tiny(image: Image, tiny_dirs: tuple[Path, Path]) -> None:
    lm, emb = tiny_dirs
    ingest_model_dir(image, lm, "base", progress=lambda line: None)
    ingest_model_dir(image, emb, "embedding", kind="embedding", progress=lambda line: None)


def source_files(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}


def test_ingest_stores_every_file_as_a_blob(image: Image, tiny_dirs: tuple[Path, Path]) -> None:
    ingest_tiny(image, tiny_dirs)
    for name, directory in zip(("base", "embedding"), tiny_dirs, strict=True):
        originals = source_files(directory)
        with image.reading() as root:
            record = root["models"][name]
            assert isinstance(record, ModelRecord)
            assert set(record.files) == set(originals)
            assert all(isinstance(blob, Blob) for blob in record.files.values())
            assert record.digests() == {rel: sha256_of(p) for rel, p in originals.items()}
        assert all(p.is_file() for p in originals.values())  # the user's files stay put
    with image.reading() as root:
        assert "1_Pooling/config.json" in root["models"]["embedding"].files
        assert root["models"]["base"].summary["architecture"] == "LlamaForCausalLM"


def test_engine_loads_in_place_from_the_blobs(image: Image, image_dir: Path,
                                              tiny_dirs: tuple[Path, Path]) -> None:
    ingest_tiny(image, tiny_dirs)
    blobs = (image_dir / "blobs").resolve()
    with image.reading() as root:
        directory = models.materialize(root["models"]["base"])
        assert models.materialize(root["models"]["base"]) == directory  # cached per process
    links = [p for p in directory.rglob("*") if not p.is_dir()]
    assert links and all(p.is_symlink() for p in links)
    assert all(p.resolve().is_relative_to(blobs) for p in links)
    engine = load_from_image(image, device="cpu")
    result = engine.generate(GenerationRequest(QUESTION, 0.0, 8))
    assert result.tokens == 8 and result.text
    assert len(engine.embed(["hello"])[0]) == 32


def test_reingesting_the_same_content_changes_nothing(image: Image,
                                                      tiny_dirs: tuple[Path, Path]) -> None:
    ingest_tiny(image, tiny_dirs)
    with image.reading() as root:
        oid = root["models"]["base"]._p_oid
    before = last_tid(image)
    ingest_tiny(image, tiny_dirs)
    assert last_tid(image) == before
    with image.reading() as root:
        assert root["models"]["base"]._p_oid == oid


def test_new_content_replaces_the_model(image: Image, tiny_dirs: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    ingest_tiny(image, tiny_dirs)
    with image.reading() as root:
        old = root["models"]["base"].digests()
    other = build_tiny_model_dir(tmp_path / "other", seed=99)
    ingest_model_dir(image, other, "base", progress=lambda line: None)
    with image.reading() as root:
        new = root["models"]["base"].digests()
    assert new != old and new["model.safetensors"] == sha256_of(other / "model.safetensors")


def break_config(text: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        (directory / "config.json").write_text(text)
    return damage


def remove(*names: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        for name in names:
            (directory / name).unlink()
    return damage


BAD_DIRECTORIES = {
    "missing config.json": (remove("config.json"), "no_config"),
    "config.json not JSON": (break_config("{not json"), "config_not_json"),
    "unknown model type": (break_config(json.dumps({"model_type": "no-such-model"})),
                           "config_not_loadable"),
    "encoder, not causal": (break_config(json.dumps(
        {"model_type": "bert", "architectures": ["BertModel"]})), "not_causal"),
    "no weights": (remove("model.safetensors"), "no_weights"),
    "no tokenizer": (remove("tokenizer.json", "tokenizer_config.json"), "no_tokenizer"),
    "no chat template": (remove("chat_template.jinja"), "no_chat_template"),
}


@pytest.mark.parametrize("case", list(BAD_DIRECTORIES))
def test_bad_directory_is_refused_and_the_image_is_unchanged(
        image: Image, tiny_dirs: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    damage, reason = BAD_DIRECTORIES[case]
    directory = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], directory)
    damage(directory)
    before = last_tid(image)
    with pytest.raises(BadModelDirectory) as caught:
        ingest_model_dir(image, directory, "base", progress=lambda line: None)
    assert (caught.value.path, caught.value.reason) == (str(directory), reason)
    assert last_tid(image) == before
    with image.reading() as root:
        assert "base" not in root["models"]


def test_a_missing_directory_is_refused(image: Image, tmp_path: Path) -> None:
    with pytest.raises(BadModelDirectory) as caught:
        ingest_model_dir(image, tmp_path / "absent", progress=lambda line: None)
    assert (caught.value.path, caught.value.reason) == (str(tmp_path / "absent"),
                                                        "not_a_directory")


@pytest.mark.model
def test_embedded_models_convert_ingest_load_and_answer(image: Image) -> None:
    lines: list[str] = []
    assert models.ensure_default_models(image, progress=lines.append) == ["base", "embedding"]
    print("\n".join(lines))
    before = last_tid(image)
    assert models.ensure_default_models(image, progress=lines.append) == []
    assert last_tid(image) == before
    engine = load_from_image(image, device="cpu")
    result = engine.generate(GenerationRequest(QUESTION, 0.0, 16))
    print(f"SmolLM2: {result.text!r}: {result.tokens} tokens in {result.seconds:.2f} s, "
          f"{result.tokens / result.seconds:.1f} tokens/s, mean logprob {result.mean_logprob:.3f}")
    assert result.text.strip() and 0 < result.tokens <= 16
    assert len(engine.embed(["Paris is the capital of France."])[0]) == 384
