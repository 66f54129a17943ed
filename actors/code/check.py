"""The guardian's first look at a script before the sandbox runs it.

A script is not a method, so the guardian's own entry point (one `def`) does
not fit; this module puts the script's statements into a synthetic
`def script(self, print)` and hands it to `prototypes.guardian.check_safety`,
the same rules generated methods pass, with two allowances a script needs:
importing the computational standard-library modules of `SCRIPT_MODULES`
(each import binds its names; any other import is refused) and defining
functions and classes (`nested-definition`, `decorator`). `print` is the
script's way to report, so it is a parameter of the synthetic function.

This is a filter, not the boundary: the sandbox is. A refused script does not
run, and the verdict (rule, line, detail) is shown to the client and to the
later passes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from prototypes import guardian

SCRIPT_MODULES: frozenset[str] = frozenset({
    "math", "cmath", "statistics", "fractions", "decimal", "itertools", "functools",
    "operator", "collections", "heapq", "bisect", "random", "string", "re", "json",
    "datetime", "textwrap", "numbers",
})  # fmt: skip
ALLOWED_IN_SCRIPTS: frozenset[str] = frozenset({"nested-definition", "decorator"})


@dataclass(frozen=True)
class Violation:
    """One broken rule: where, which rule, and what."""

    line: int
    rule: str
    detail: str

    def text(self) -> str:
        return f"line {self.line}: {self.detail} (rule {self.rule})"


@dataclass(frozen=True)
class Verdict:
    """The check's answer: `ok`, or the violations lowest line first."""

    violations: tuple[Violation, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        if self.ok:
            return "accepted by the guardian's safety rules"
        return "refused: " + "; ".join(v.text() for v in self.violations)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "violations": [vars(v) for v in self.violations],
                "text": self.text()}


def check_script(code: str) -> Verdict:
    """Syntax, then the guardian's safety rules with the script allowances."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return Verdict((Violation(exc.lineno or 1, "syntax", f"syntax error: {exc.msg}"),))
    tree = _BindImports().visit(tree)
    func = _as_function(tree)
    found = [Violation(v.lineno, v.rule, v.detail) for v in guardian.check_safety(func)
             if v.rule not in ALLOWED_IN_SCRIPTS]
    return Verdict(tuple(sorted(found, key=lambda v: v.line)))


class _BindImports(ast.NodeTransformer):
    """An allowed import becomes `name = None`, and a `def` or `class` is followed by
    one: the guardian's name rules then see the names they bind."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> list[ast.stmt]:
        self.generic_visit(node)
        return [node, _binding(node, [node.name])]

    def visit_ClassDef(self, node: ast.ClassDef) -> list[ast.stmt]:
        self.generic_visit(node)
        return [node, _binding(node, [node.name])]

    def visit_Import(self, node: ast.Import) -> ast.AST:
        if all(alias.name.split(".")[0] in SCRIPT_MODULES for alias in node.names):
            names = [alias.asname or alias.name.split(".")[0] for alias in node.names]
            return _binding(node, names)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        module = (node.module or "").split(".")[0]
        starred = any(alias.name == "*" for alias in node.names)
        if node.level == 0 and module in SCRIPT_MODULES and not starred:
            return _binding(node, [alias.asname or alias.name for alias in node.names])
        return node


def _binding(node: ast.stmt, names: list[str]) -> ast.stmt:
    targets: list[ast.expr] = [ast.Name(id=name, ctx=ast.Store()) for name in names]
    stmt = ast.Assign(targets=targets, value=ast.Constant(value=None))
    return ast.copy_location(stmt, node)


def _as_function(tree: ast.Module) -> ast.FunctionDef:
    params = ast.arguments(posonlyargs=[], args=[ast.arg("self"), ast.arg("print")],
                           kwonlyargs=[], kw_defaults=[], defaults=[])
    func = ast.FunctionDef(name="script", args=params, body=tree.body or [ast.Pass()],
                           decorator_list=[], returns=None)
    func.lineno = 1
    return ast.fix_missing_locations(func)
