"""The guardian: static checks on method source before it is installed.

Every method source passes three stages, in order, and the first violation (lowest
line) is raised as a typed error carrying `lineno` and a stable `rule` string:

1. shape (all code): the source parses and is exactly one module-level
   `def name(self, ...)` -> `MalformedMethod` (rules 'syntax', 'single-def', 'self-param').
2. safety (generated code only): the allowlist below -> `SafetyViolation`.
3. the persistence covenant (all code) -> `CovenantViolation`.

The covenant: a method that mutates a value held in an attribute of `self`
(`self.items.append(x)`, `self.d[k] = v`, `del self.d[k]`, `self.d[k] += 1`,
`self.a.b = 1`) must end with `self._p_changed = True` (or with that statement
followed by a final `return`), and every `return` after the first mutation must
be directly preceded by it. Rebinding `self.x = v` or `self.x += v` goes through
the attribute hooks and needs nothing. The check is syntactic and best effort:
aliasing (`items = self.items; items.append(x)`) is not seen.

The safety allowlist is defence in depth for model-written code, not a sandbox:
the compiled function also gets only `ALLOWED_BUILTINS` as its builtins. Lambdas
and comprehensions are allowed; nested `def`/`class`, `with`, `async`, `yield`,
`global`/`nonlocal`, bare `except:`, decorators, imports, `_`-prefixed attributes
(except exactly `self._p_changed = True`), frame/code introspection attributes,
`str.format` (it reaches attributes through its format string) and free names
outside the allowlist are refused. `print` is not allowed: a method reports by
returning values, since output from inside a transaction goes nowhere useful.
"""

from __future__ import annotations

import ast
import builtins

from prototypes.errors import CovenantViolation, GuardianError, MalformedMethod, SafetyViolation

ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {
        "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float",
        "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "range",
        "repr", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
        "ArithmeticError", "IndexError", "KeyError", "LookupError", "TypeError",
        "ValueError", "ZeroDivisionError",
    }
)  # fmt: skip

FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "exec", "eval", "open", "compile", "getattr", "setattr", "delattr", "hasattr",
        "globals", "locals", "vars", "dir", "__import__", "input", "breakpoint",
        "memoryview", "type", "super", "object", "__builtins__", "exit", "quit", "help",
    }
)  # fmt: skip

FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "format", "format_map", "mro",
        "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await",
        "ag_frame", "ag_code", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
        "tb_frame", "tb_next",
        # the object model's reflective primitives: generated code must not reach a
        # trusted Method and rewrite its source, nor install or remove slots by name
        "source", "get_slot", "lookup_slot", "set_slot", "del_slot", "bind", "function",
    }
)  # fmt: skip

MUTATORS: frozenset[str] = frozenset(
    {
        "append", "extend", "insert", "pop", "remove", "clear", "setdefault", "popitem",
        "discard", "sort", "reverse", "update", "add", "difference_update",
        "intersection_update", "symmetric_difference_update", "__setitem__", "__delitem__",
    }
)  # fmt: skip

_REFUSED_NODES: tuple[tuple[type[ast.AST], str, str], ...] = (
    (ast.Import, "import", "import is not allowed in generated code"),
    (ast.ImportFrom, "import", "import is not allowed in generated code"),
    (ast.Global, "global", "global/nonlocal is not allowed in generated code"),
    (ast.Nonlocal, "global", "global/nonlocal is not allowed in generated code"),
    (ast.FunctionDef, "nested-definition", "nested def is not allowed in generated code"),
    (ast.AsyncFunctionDef, "nested-definition", "nested def is not allowed in generated code"),
    (ast.ClassDef, "nested-definition", "class is not allowed in generated code"),
    (ast.With, "with", "with is not allowed in generated code"),
    (ast.AsyncWith, "async", "async code is not allowed in generated code"),
    (ast.AsyncFor, "async", "async code is not allowed in generated code"),
    (ast.Await, "async", "async code is not allowed in generated code"),
    (ast.Yield, "yield", "yield is not allowed in generated code"),
    (ast.YieldFrom, "yield", "yield is not allowed in generated code"),
)


def safe_builtins() -> dict[str, object]:
    """The builtins namespace given to compiled generated methods."""
    return {name: getattr(builtins, name) for name in sorted(ALLOWED_BUILTINS)}


def check_source(source: str, *, generated: bool) -> None:
    """Raise the first `GuardianError` for `source`, or return if it may be installed."""
    found = violations(source, generated=generated)
    if found:
        raise found[0]


def violations(source: str, *, generated: bool) -> list[GuardianError]:
    """Every violation in `source`, lowest line first (shape errors stop the check)."""
    try:
        func = parse_method(source)
    except MalformedMethod as exc:
        return [exc]
    found: list[GuardianError] = []
    if generated:
        found.extend(check_safety(func))
    found.extend(check_covenant(func))
    return sorted(found, key=lambda err: err.lineno)


def parse_method(source: str) -> ast.FunctionDef:
    """Parse `source` into its single `def`, or raise `MalformedMethod`."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise MalformedMethod(exc.lineno or 1, "syntax", f"syntax error: {exc.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        line = tree.body[1].lineno if len(tree.body) > 1 else _first_line(tree)
        raise MalformedMethod(line, "single-def", "source must be exactly one module-level def")
    func = tree.body[0]
    params = func.args.posonlyargs + func.args.args
    if not params or params[0].arg != "self":
        raise MalformedMethod(func.lineno, "self-param", "the first parameter must be 'self'")
    return func


def method_name(source: str) -> str:
    """The name of the function defined by (valid) method `source`."""
    return parse_method(source).name


def _first_line(tree: ast.Module) -> int:
    return tree.body[0].lineno if tree.body else 1


# -- safety -----------------------------------------------------------------------------


def check_safety(func: ast.FunctionDef) -> list[SafetyViolation]:
    """The safety allowlist violations in a generated method."""
    bound = _bound_names(func)
    markers = [node for node in ast.walk(func) if isinstance(node, ast.Assign)]
    exempt = {id(stmt.targets[0]) for stmt in markers if _is_exact_marker(stmt)}
    found = [_decorator_violation(node) for node in func.decorator_list]
    for node in ast.walk(func):
        if node is not func and id(node) not in exempt:
            found.extend(_node_violations(node, bound))
    return found


def _decorator_violation(node: ast.AST) -> SafetyViolation:
    return SafetyViolation(_line(node), "decorator", "decorators are not allowed in generated code")


def _node_violations(node: ast.AST, bound: set[str]) -> list[SafetyViolation]:
    for kind, rule, detail in _REFUSED_NODES:
        if isinstance(node, kind):
            return [SafetyViolation(_line(node), rule, detail)]
    match node:
        case ast.Attribute():
            return _attribute_violations(node)
        case ast.Name():
            return _name_violations(node, bound)
        case ast.ExceptHandler(type=None):
            return [SafetyViolation(node.lineno, "bare-except", "bare except: is not allowed")]
    return []


def _attribute_violations(node: ast.Attribute) -> list[SafetyViolation]:
    attr = node.attr
    if attr.startswith("__") and attr.endswith("__"):
        return [SafetyViolation(node.lineno, "dunder", f"dunder attribute .{attr} is not allowed")]
    if attr.startswith("_"):
        detail = f"private attribute .{attr} is not allowed in generated code"
        return [SafetyViolation(node.lineno, "private-attribute", detail)]
    if attr in FORBIDDEN_ATTRIBUTES:
        detail = f"attribute .{attr} is not allowed in generated code"
        return [SafetyViolation(node.lineno, "forbidden-attribute", detail)]
    return []


def _name_violations(node: ast.Name, bound: set[str]) -> list[SafetyViolation]:
    name = node.id
    if name in FORBIDDEN_NAMES:
        return [SafetyViolation(node.lineno, "forbidden-name", f"name {name!r} is not allowed")]
    if name.startswith("__") and name.endswith("__"):
        return [SafetyViolation(node.lineno, "dunder", f"dunder name {name!r} is not allowed")]
    if isinstance(node.ctx, ast.Load) and name not in bound and name not in ALLOWED_BUILTINS:
        detail = f"name {name!r} is neither local nor an allowed builtin"
        return [SafetyViolation(node.lineno, "unknown-name", detail)]
    return []


def _bound_names(func: ast.FunctionDef) -> set[str]:
    """Names bound anywhere inside `func` (one flat scope: a deliberate simplification)."""
    bound = {"self"}
    for node in ast.walk(func):
        match node:
            case ast.arg(arg=name):
                bound.add(name)
            case ast.Name(id=name, ctx=ast.Store() | ast.Del()):
                bound.add(name)
            case ast.ExceptHandler(name=str() as name):
                bound.add(name)
            case ast.MatchAs(name=str() as name) | ast.MatchStar(name=str() as name):
                bound.add(name)
            case ast.MatchMapping(rest=str() as name):
                bound.add(name)
    return bound


# -- covenant ---------------------------------------------------------------------------


def check_covenant(func: ast.FunctionDef) -> list[CovenantViolation]:
    """The persistence-covenant violations in a method."""
    mutations = sorted(_mutations(func), key=_line)
    if not mutations:
        return []
    first = mutations[0]
    found: list[CovenantViolation] = []
    if not _ends_with_marker(func.body):
        detail = f"{_snippet(first)} mutates a value held by self; end with self._p_changed = True"
        found.append(CovenantViolation(_line(first), "covenant", detail))
    for ret in _returns_after(func, _line(first)):
        detail = "return after a mutation must be directly preceded by self._p_changed = True"
        found.append(CovenantViolation(ret.lineno, "covenant-return", detail))
    return found


def _mutations(func: ast.FunctionDef) -> list[ast.AST]:
    found: list[ast.AST] = []
    for node in ast.walk(func):
        match node:
            case ast.Call(func=ast.Attribute(attr=attr, value=held)) if attr in MUTATORS:
                if _holds_self_value(held):
                    found.append(node)
            case ast.Assign(targets=targets) | ast.Delete(targets=targets):
                found.extend(t for t in _flatten(targets) if _is_nested_target(t))
            case ast.AugAssign(target=target) | ast.AnnAssign(target=target):
                if _is_nested_target(target):
                    found.append(target)
    return found


def _flatten(targets: list[ast.expr]) -> list[ast.expr]:
    flat: list[ast.expr] = []
    for target in targets:
        match target:
            case ast.Tuple(elts=elts) | ast.List(elts=elts):
                flat.extend(_flatten(elts))
            case ast.Starred(value=value):
                flat.extend(_flatten([value]))
            case _:
                flat.append(target)
    return flat


def _is_nested_target(target: ast.expr) -> bool:
    """`self.x[k]` or `self.x.y`: a store into a value held by self, not a rebinding."""
    return isinstance(target, ast.Subscript | ast.Attribute) and _holds_self_value(target.value)


def _holds_self_value(expr: ast.expr) -> bool:
    """True for `self.x`, `self.x[k]`, `self.x.y[k]`...: an expression rooted at a slot."""
    depth = 0
    while isinstance(expr, ast.Attribute | ast.Subscript):
        expr = expr.value
        depth += 1
    return depth > 0 and _is_self(expr)


def _is_self(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Name) and expr.id == "self"


def _is_true_marker(stmt: ast.AST) -> bool:
    """`self._p_changed = True` (or `= 1`): the statement that closes a mutating method."""
    match stmt:
        case ast.Assign(
            targets=[ast.Attribute(attr="_p_changed", value=target)],
            value=ast.Constant(value=value),
        ):
            return _is_self(target) and value in (True, 1)
    return False


def _is_exact_marker(stmt: ast.AST) -> bool:
    """Exactly `self._p_changed = True`: the one `_` attribute generated code may touch."""
    return _is_true_marker(stmt) and stmt.value.value is True  # type: ignore[attr-defined]


def _ends_with_marker(body: list[ast.stmt]) -> bool:
    if _is_true_marker(body[-1]):
        return True
    return isinstance(body[-1], ast.Return) and len(body) > 1 and _is_true_marker(body[-2])


def _returns_after(func: ast.FunctionDef, line: int) -> list[ast.Return]:
    """`return` statements after `line` that are not directly preceded by the marker."""
    bad: list[ast.Return] = []
    for block in _blocks(func):
        for index, stmt in enumerate(block):
            marked = index > 0 and _is_true_marker(block[index - 1])
            if isinstance(stmt, ast.Return) and stmt.lineno > line and not marked:
                bad.append(stmt)
    return bad


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    """Statement blocks of `node` and its compound statements (nested defs excluded)."""
    blocks: list[list[ast.stmt]] = []
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            blocks.append(block)
    for child in ast.iter_child_nodes(node):
        nested_scope = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case) and not nested_scope:
            blocks.extend(_blocks(child))
    return blocks


def _snippet(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."


def _line(node: ast.AST) -> int:
    return getattr(node, "lineno", 1)
