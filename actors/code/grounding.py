"""The final answer uses what the code computed: a deterministic step after scoring.

When the router's code ran and succeeded, its output is a fact the mission
computed; a small drafter may still ignore it (SmolLM2-135M answered "100"
for 2**100 with the right number in its prompt). So once the scorer has
chosen the answer, `ground` checks it against every successful `run_code`
output of the mission. An answer that already contains the output is left
as it is. Otherwise the answer is prefixed with the computed output and its
provenance (`PROVENANCE`), so the answer the user reads, and the one memory
keeps, states the result the sandbox produced.

"Contains" is read generously but exactly: case and runs of whitespace are
ignored, and so are thousands separators inside numbers
(1,267,650,600,228,229,401,496,703,205,376 is 2**100); every non-empty line
of the output must appear, or only the last line when the output is long
(a program often prints its steps before its result).

Failed, stopped or refused runs never reach the answer from here: their
blocks are labelled as such for the model, and nothing computed them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TOOL = "run_code"  # the `tool` of the context blocks the coder writes
PROVENANCE = "Computed by running the Python code in the sandbox (exit status 0)"
WHOLE_OUTPUT_CHARS = 500  # longer outputs: only the last line must appear

_SPACES = re.compile(r"\s+")
_DIGIT_SEPARATOR = re.compile(r"(?<=\d)[,_](?=\d{3}(?!\d))")


@dataclass(frozen=True)
class Grounding:
    """The answer after the check; `added` lists the outputs that had to be stated."""

    answer: str
    added: tuple[str, ...]


def computed_outputs(blocks: Iterable[Mapping[str, Any]]) -> list[str]:
    """The stripped stdout of every successful run whose block the coder wrote."""
    return [str(block["output"]).strip() for block in blocks
            if block.get("tool") == TOOL and block.get("outcome") == "ok"
            and str(block.get("output") or "").strip()]


def uses_output(answer: str, output: str) -> bool:
    """True when `answer` states `output` (rules in the module docstring)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if len(output) > WHOLE_OUTPUT_CHARS:
        lines = lines[-1:]
    said = canonical(answer)
    return all(canonical(line) in said for line in lines)


def canonical(text: str) -> str:
    """Lower case, single spaces, no thousands separators inside numbers."""
    return _SPACES.sub(" ", _DIGIT_SEPARATOR.sub("", text)).strip().lower()


def ground(answer: str, blocks: Iterable[Mapping[str, Any]]) -> Grounding:
    """`answer`, prefixed with each computed output it does not already state."""
    missing = tuple(out for out in computed_outputs(blocks) if not uses_output(answer, out))
    if not missing:
        return Grounding(answer, ())
    stated = "\n".join(statement(out) for out in missing)
    return Grounding(f"{stated}\n\n{answer.strip()}".strip(), missing)


def statement(output: str) -> str:
    """One computed output with its provenance: inline when short, else as a block."""
    if "\n" not in output and len(output) <= 200:
        return f"{PROVENANCE}: {output}"
    return f"{PROVENANCE}:\n{output}"
