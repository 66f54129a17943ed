"""`_TextPieces`: word-sized streamed pieces that carry the tokens they took.

A vocabulary double (one token per character) stands in for a tokenizer, so
the counting is checked exactly; both real engines are checked in
`test_engine.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from actors import llm
from actors.engine_base import _cut_at_stop, _TextPieces


class Chars:
    """Token i is the character chr(i)."""

    def decode(self, ids: Sequence[int], **_options: Any) -> str:
        return "".join(chr(i) for i in ids)


def streamed(text: str, stop: tuple[str, ...] = (), unput: int = 0
             ) -> tuple[list[str], list[int | None]]:
    """Put `text` one character-token at a time, then finish with `unput` more tokens
    that were generated but never put (an end-of-generation token)."""
    pieces: list[str] = []
    streamer = _TextPieces(Chars(), stop, pieces.append)
    streamer.put(torch.tensor([ord("P")]))  # the prompt, which is skipped
    for char in text:
        streamer.put(torch.tensor([ord(char)]))
    final = _cut_at_stop(text, stop)
    streamer.finish(final, len(text) + unput)
    return pieces, [llm.piece_tokens(p) for p in pieces]


def test_each_piece_carries_the_tokens_put_since_the_last() -> None:
    pieces, tokens = streamed("to be or not")
    assert pieces == ["to ", "be ", "or ", "not"]
    assert tokens == [3, 3, 3, 3]


def test_the_last_piece_takes_the_tokens_never_put() -> None:
    pieces, tokens = streamed("to be", unput=1)
    assert pieces == ["to ", "be"] and tokens == [3, 3]


def test_tokens_that_wrote_no_text_come_as_an_empty_last_piece() -> None:
    pieces, tokens = streamed("to be ", unput=1)
    assert pieces == ["to ", "be ", ""] and tokens == [3, 3, 1]


@pytest.mark.parametrize("text", ["say hi END and more", "ENDnothing", "a b c"])
def test_a_cut_stop_string_is_counted_and_the_counts_add_up(text: str) -> None:
    pieces, tokens = streamed(text, stop=("END",), unput=1)
    assert "".join(pieces) == _cut_at_stop(text, ("END",))
    assert sum(t or 0 for t in tokens) == len(text) + 1
    assert all(pieces[:-1])


def test_without_a_total_the_last_piece_takes_what_was_put() -> None:
    pieces: list[str] = []
    streamer = _TextPieces(Chars(), (), pieces.append)
    for char in "Pab cd":  # the prompt, then five characters
        streamer.put(torch.tensor([ord(char)]))
    streamer.finish("ab cd")
    assert [llm.piece_tokens(p) for p in pieces] == [3, 2]
