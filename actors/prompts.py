"""What each role is told, and how the router's answer is read.

Every pass is one clean system + user pair: the system prompt below names the
role's job, and the user message carries everything else (the question, the
draft, the critique, recalled context) as labelled sections. Earlier passes
never appear as assistant turns, so a small model cannot mistake them for
its own words.

The router answers one JSON object; `parse_route` reads it strictly first,
then repairs the usual small-model damage, and otherwise falls back to "no
tools". It never raises on model output.
"""

from __future__ import annotations

import json
import re
from typing import Any

ROUTER = (
    "You are the router of a local assistant. Decide whether answering the user's "
    "question needs a document search or running Python code. Reply with one JSON "
    'object and nothing else: {"needs_rag": false, "rag_query": "", '
    '"needs_code": false, "code": ""}'
)
DRAFTER = (
    "You are the drafter. Write a direct, complete first answer to the question. "
    "If context is given, use what helps and ignore the rest."
)
CRITIC = (
    "You are the critic. Check the answer to the question. Begin with one line, "
    "'Verdict: keep' if the answer is correct or 'Verdict: revise' if it is wrong. "
    "If you say revise, list its factual errors as short bullet points. "
    "Do not rewrite the answer."
)
SYNTHESIZER = (
    "You are the synthesizer. Write the final answer to the question: keep what the "
    "draft gets right and fix every problem the critique names. Output only the answer."
)
AUDITOR = (
    "You audit a local AI agent runtime from its own figures. In two or three "
    "sentences, say what looks healthy, what looks wrong, and one concrete action."
)

# pass name (as in `pass` events) -> system prompt
SYSTEM: dict[str, str] = {
    "route": ROUTER, "draft": DRAFTER, "critique": CRITIC, "synthesize": SYNTHESIZER,
}


def sections(*parts: tuple[str, str | None]) -> str:
    """Labelled blocks ("Label:\\ntext"), skipping empty ones, separated by blank lines."""
    return "\n\n".join(f"{label}:\n{text.strip()}" for label, text in parts
                       if text is not None and text.strip())


def route_user(question: str) -> str:
    return sections(("Question", question))


Sections = tuple[tuple[str, str], ...]


def draft_user(question: str, recalled: str | None = None, tools: Sections = ()) -> str:
    """The tools' output, the question, plus an earlier low-confidence answer to a similar one."""
    earlier = None if recalled is None else (
        f"{recalled}\n(An earlier answer to a similar question; it may be wrong.)")
    return sections(*tools, ("Question", question), ("Context", earlier))


def critique_user(question: str, draft: str, previous: str | None = None,
                  tools: Sections = ()) -> str:
    """The draft to review; on a retry, the final answer that scored too low instead."""
    if previous is None:
        return sections(*tools, ("Question", question), ("Answer to review", draft))
    return sections(*tools, ("Question", question), ("Draft", draft),
                    ("Answer to review (judged weak)", previous))


def synthesize_user(question: str, draft: str, critique: str,
                    previous: str | None = None, tools: Sections = ()) -> str:
    return sections(*tools, ("Question", question), ("Draft", draft),
                    ("Previous final answer (judged weak)", previous),
                    ("Critique", critique))


# -- the router's answer ---------------------------------------------------------

ROUTE_PARSES = ("json", "repaired", "no_tools")  # how `parse_route` read the router's answer
NO_TOOLS: dict[str, Any] = {"needs_rag": False, "rag_query": "", "needs_code": False,
                            "code": ""}
MAX_CODE_CHARS = 4000  # model-written code is kept as a note, never run

_TRUTHY = {"true", "yes", "1", "y"}
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_PY_LITERALS = ((re.compile(r"\bTrue\b"), "true"), (re.compile(r"\bFalse\b"), "false"),
                (re.compile(r"\bNone\b"), "null"))
_BARE_KEY = re.compile(r'([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:')
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_route(text: str) -> tuple[dict[str, Any], str]:
    """(plan, how): how is "json" (valid as given), "repaired" or "no_tools"."""
    strict = _load_object(text.strip())
    if strict is not None:
        return _plan(strict), "json"
    candidate = first_object(_FENCE.sub("", text))
    if candidate is not None:
        for attempt in (candidate, repair_json(candidate)):
            loaded = _load_object(attempt)
            if loaded is not None:
                return _plan(loaded), "repaired"
    return dict(NO_TOOLS), "no_tools"


def first_object(text: str) -> str | None:
    """The first balanced {...} in `text`; an unclosed one is closed at the end."""
    start = text.find("{")
    if start < 0:
        return None
    depth, quote, escaped = 0, "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index + 1]
    tail = text[start:].rstrip().rstrip(",")  # cut off by the token budget
    return tail + quote + "}" * depth


def repair_json(text: str) -> str:
    """Single quotes, bare keys, Python literals and trailing commas made JSON."""
    fixed = _single_to_double_quotes(text)
    for pattern, replacement in _PY_LITERALS:
        fixed = pattern.sub(replacement, fixed)
    fixed = _BARE_KEY.sub(r'\1"\2":', fixed)
    fixed = re.sub(r":\s*(TRUE|FALSE|NULL)\b",
                   lambda m: ": " + m.group(1).lower(), fixed)
    return _TRAILING_COMMA.sub(r"\1", fixed)


def _single_to_double_quotes(text: str) -> str:
    """Swap '...' strings for "..." ones, leaving apostrophes inside "..." alone."""
    out: list[str] = []
    quote = ""
    for char in text:
        if not quote and char in "\"'":
            quote = char
            out.append('"')
        elif quote and char == quote:
            quote = ""
            out.append('"')
        elif quote == "'" and char == '"':
            out.append('\\"')
        else:
            out.append(char)
    return "".join(out)


def _load_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _plan(raw: dict[str, Any]) -> dict[str, Any]:
    """The four known fields, typed; anything else the model said is dropped."""
    return {"needs_rag": _flag(raw.get("needs_rag")),
            "rag_query": _text(raw.get("rag_query")),
            "needs_code": _flag(raw.get("needs_code")),
            "code": _text(raw.get("code"))[:MAX_CODE_CHARS]}


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUTHY
    return bool(value) if isinstance(value, bool | int | float) else False


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
