"""Code for a question that asks for it, when the router's plan brought none.

The router plans `needs_code` and writes the code in one JSON object; the
embedded 135M router, with its JSON persona, rarely does both (for "What is
2**100? Use Python." it answered `needs_code: false`). So the `run_code`
pass also runs when the question itself asks for Python (`asks_for_code`, a
fixed rule on the question's words) or when the router wanted code and wrote
none; the coder then asks the model for the program in a generation of its
own (`code_request`): the bare model, low temperature, two worked examples,
"reply with only the code". `extract_code` takes the first fenced block, or
the whole reply when it is a program as it stands.

What comes back is model-written code like the router's: it is checked by the
guardian's rules and runs only in the sandbox; a reply with no code is
reported as NOT RUN, never guessed at.
"""

from __future__ import annotations

import ast
import re

from actors import llm

WRITE_TEMPERATURE = 0.1
WRITE_TOKENS = 160
SYSTEM = (
    "You write short Python 3 programs that print the answer to a question. "
    "Reply with only the code.\n\n"
    "Question: What is 7 * 191?\n```python\nprint(7 * 191)\n```\n\n"
    "Question: Add the numbers from 1 to 10. Use Python.\n"
    "```python\nprint(sum(range(1, 11)))\n```"
)

_ASKS = re.compile(r"\b(python|run (some |the )?code|write (a )?program)\b", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def asks_for_code(question: str) -> bool:
    """True when the question asks for Python or for running code, in so many words."""
    return _ASKS.search(question) is not None


def code_request(question: str) -> llm.GenerationRequest:
    """The generation that writes the program for `question` (the bare model)."""
    return llm.GenerationRequest(
        messages=(llm.ChatMessage("system", SYSTEM),
                  llm.ChatMessage("user", f"Question: {question.strip()}")),
        temperature=WRITE_TEMPERATURE, max_new_tokens=WRITE_TOKENS, persona=None)


def extract_code(reply: str) -> str:
    """The first fenced block of `reply`; else `reply` itself if it parses; else ""."""
    fenced = _FENCE.search(reply)
    if fenced is not None:
        return fenced.group(1).strip()
    text = reply.strip()
    if not text:
        return ""
    try:
        ast.parse(text)
    except SyntaxError:
        return ""
    return text
