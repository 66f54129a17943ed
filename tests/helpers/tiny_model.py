"""Tiny, randomly initialised models for tests: built offline in about a second.

`build_tiny_model_dir` writes a Hugging Face causal-LM directory (a 2-layer
Llama with a byte-level BPE tokenizer trained on a few lines of text, ChatML
chat template like SmolLM2's); `build_tiny_embedding_dir` writes a
sentence-transformers directory (a 2-layer BERT, mean pooling, normalisation).
Both are seeded and print their seed, so a failure can be replayed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Never reach for a hub, even by accident.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "A mission is split into steps; every step is one transaction.",
    "Actors live in the image and answer messages from their mailbox.",
    "Think step by step, then answer briefly and cite what you used.",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
    "system user assistant: what, why, how? yes; no! (maybe) [ok] {done}",
]
DEFAULT_SEED = 1234
EMBED_STD = 1.0
HEAD_STD = 1.0


def build_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with SmolLM2's special tokens and chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model_dir(path: Path | str, *, seed: int = DEFAULT_SEED) -> Path:
    """Write a tiny random LlamaForCausalLM plus tokenizer into `path`; returns it."""
    print(f"tiny model seed: {seed}")
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger random weights than the default init, so the untrained model's
    # distribution is neither flat nor stuck on repeating its last token.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, EMBED_STD)
        model.lm_head.weight.normal_(0.0, HEAD_STD)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 2
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build_tiny_embedding_dir(path: Path | str, *, seed: int = DEFAULT_SEED) -> Path:
    """Write a tiny random sentence-transformers model (BERT, mean pooling, normalise)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_models
    from transformers import BertConfig, BertModel, BertTokenizer

    print(f"tiny embedding seed: {seed}")
    target = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        encoder_dir = Path(scratch)
        words = sorted({w.strip(".,;:!?()[]{}").lower() for line in CORPUS for w in line.split()})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[w for w in words if w]]
        (encoder_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
        BertTokenizer(vocab_file=str(encoder_dir / "vocab.txt")).save_pretrained(encoder_dir)
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=128)
        BertModel(config).save_pretrained(encoder_dir)
        transformer = st_models.Transformer(str(encoder_dir), max_seq_length=64)
        pooling = st_models.Pooling(transformer.get_embedding_dimension(), "mean")
        SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()],
                            device="cpu").save(str(target))
    return target
