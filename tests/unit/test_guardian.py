"""The guardian: a table of method sources and the verdict each must get."""

from __future__ import annotations

import pytest

from prototypes import (
    CovenantViolation,
    GuardianError,
    MalformedMethod,
    PrototypeError,
    SafetyViolation,
    check_source,
)
from prototypes.guardian import safe_builtins, violations


def src(*lines: str) -> str:
    """Join source lines; keeps the table readable."""
    return "\n".join(lines) + "\n"


M, C, S = MalformedMethod, CovenantViolation, SafetyViolation

# (id, source, generated, expected error class or None, line, rule)
# fmt: off
CASES = [
    ("plain-return", src("def f(self):", "    return 1"), True, None, 0, ""),
    ("append-marked", src("def f(self, x):", "    self.items.append(x)",
                          "    self._p_changed = True"), True, None, 0, ""),
    ("marker-then-return", src("def f(self, x):", "    self.items.append(x)",
                               "    self._p_changed = True", "    return len(self.items)"),
     True, None, 0, ""),
    ("rebind-augassign", src("def f(self):", "    self.count += 1"), True, None, 0, ""),
    ("rebind-assign", src("def f(self):", "    self.items = [1, 2]"), True, None, 0, ""),
    ("guard-clause", src("def f(self, x):", "    if x is None:", "        return None",
                         "    self.d[x] = 1", "    self._p_changed = True"), True, None, 0, ""),
    ("lambda-sorted", src("def f(self, xs):", "    return sorted(xs, key=lambda v: -v)"),
     True, None, 0, ""),
    ("locals-loops", src("def f(self, a):", "    b = a * 2", "    for i in range(b):",
                         "        a += i", "    return [j for j in range(a)]"), True, None, 0, ""),
    ("typed-except", src("def f(self, s):", "    try:", "        return int(s)",
                         "    except ValueError as err:", "        return str(err)"),
     True, None, 0, ""),
    ("trusted-import", src("def f(self):", "    import math", "    return math.pi"),
     False, None, 0, ""),
    ("trusted-private", src("def f(self):", "    return self._p_oid"), False, None, 0, ""),
    ("trusted-mutation-int-marker", src("def f(self):", "    self.d.clear()",
                                        "    self._p_changed = 1"), False, None, 0, ""),
    ("syntax", src("def f(self):", "    return ("), False, M, 2, "syntax"),
    ("not-a-def", src("x = 1"), False, M, 1, "single-def"),
    ("two-defs", src("def f(self):", "    pass", "def g(self):", "    pass"),
     False, M, 3, "single-def"),
    ("async-def", src("async def f(self):", "    pass"), False, M, 1, "single-def"),
    ("no-self", src("def f(x):", "    return x"), False, M, 1, "self-param"),
    ("import", src("def f(self):", "    import os", "    return 1"), True, S, 2, "import"),
    ("from-import", src("def f(self):", "    from os import path"), True, S, 2, "import"),
    ("dunder-attribute", src("def f(self):", "    return self.__class__"), True, S, 2, "dunder"),
    ("dunder-name", src("def f(self):", "    return __name__"), True, S, 2, "dunder"),
    ("private-attribute", src("def f(self):", "    return self._slots"),
     True, S, 2, "private-attribute"),
    ("p-changed-false", src("def f(self):", "    self._p_changed = False"),
     True, S, 2, "private-attribute"),
    ("p-changed-read", src("def f(self):", "    return self._p_changed"),
     True, S, 2, "private-attribute"),
    ("eval", src("def f(self, s):", "    return eval(s)"), True, S, 2, "forbidden-name"),
    ("open", src("def f(self):", "    return open('/etc/passwd')"), True, S, 2, "forbidden-name"),
    ("getattr", src("def f(self, o):", "    return getattr(o, 'x')"), True, S, 2, "forbidden-name"),
    ("type", src("def f(self, o):", "    return type(o)"), True, S, 2, "forbidden-name"),
    ("dunder-import", src("def f(self):", "    return __import__('os')"),
     True, S, 2, "forbidden-name"),
    ("unknown-name", src("def f(self):", "    return os.getcwd()"), True, S, 2, "unknown-name"),
    ("print", src("def f(self):", "    print('hi')"), True, S, 2, "unknown-name"),
    ("global", src("def f(self):", "    global X", "    X = 1"), True, S, 2, "global"),
    ("free-name-in-lambda", src("def f(self):", "    return lambda: y"),
     True, S, 2, "unknown-name"),
    ("nested-def", src("def f(self):", "    def g():", "        return 1", "    return g"),
     True, S, 2, "nested-definition"),
    ("class", src("def f(self):", "    class K:", "        pass"), True, S, 2, "nested-definition"),
    ("with", src("def f(self, lock):", "    with lock:", "        return 1"), True, S, 2, "with"),
    ("yield", src("def f(self):", "    yield 1"), True, S, 2, "yield"),
    ("await", src("def f(self, x):", "    await x"), True, S, 2, "async"),
    ("bare-except", src("def f(self):", "    try:", "        return 1", "    except:",
                        "        return 2"), True, S, 4, "bare-except"),
    ("decorator", src("@staticmethod", "def f(self):", "    return 1"), True, S, 1, "decorator"),
    ("str-format", src("def f(self, x):", "    return '{0}'.format(x)"),
     True, S, 2, "forbidden-attribute"),
    ("frame-escape", src("def f(self):", "    g = (i for i in [1])", "    return g.gi_frame"),
     True, S, 3, "forbidden-attribute"),
    ("rewrite-trusted-method", src("def f(self):", "    m = self.get_slot('relay')",
                                   "    m.source = 'def relay(self): return 1'"),
     True, S, 2, "forbidden-attribute"),
    ("append-unmarked", src("def f(self, x):", "    self.items.append(x)"),
     False, C, 2, "covenant"),
    ("append-unmarked-generated", src("def f(self, x):", "    y = x", "    self.items.append(y)"),
     True, C, 3, "covenant"),
    ("setitem", src("def f(self, k, v):", "    self.d[k] = v"), False, C, 2, "covenant"),
    ("delitem", src("def f(self, k):", "    del self.d[k]"), False, C, 2, "covenant"),
    ("augassign-subscript", src("def f(self, k):", "    self.d[k] += 1"), False, C, 2, "covenant"),
    ("update", src("def f(self, m):", "    self.d.update(m)"), False, C, 2, "covenant"),
    ("nested-attribute", src("def f(self):", "    self.a.b = 1"), False, C, 2, "covenant"),
    ("tuple-target", src("def f(self):", "    self.d[0], y = 1, 2"), False, C, 2, "covenant"),
    ("deep-chain", src("def f(self, x):", "    self.d['k'][0].add(x)"), False, C, 2, "covenant"),
    ("marker-not-last", src("def f(self, x):", "    self.items.append(x)",
                            "    self._p_changed = True", "    y = 1"), False, C, 2, "covenant"),
    ("early-return", src("def f(self, x):", "    self.items.append(x)", "    if x:",
                         "        return 1", "    self._p_changed = True"),
     False, C, 4, "covenant-return"),
]
# fmt: on


@pytest.mark.parametrize(
    ("source", "generated", "error", "lineno", "rule"),
    [pytest.param(*row[1:], id=row[0]) for row in CASES],
)
def test_guardian_verdicts(
    source: str, generated: bool, error: type[GuardianError] | None, lineno: int, rule: str
) -> None:
    if error is None:
        check_source(source, generated=generated)
        return
    with pytest.raises(error) as info:
        check_source(source, generated=generated)
    assert (info.value.lineno, info.value.rule) == (lineno, rule)
    assert str(info.value).startswith(f"line {lineno}: ")
    assert str(info.value).endswith(f"(rule {rule!r})")


def test_every_rule_has_a_case() -> None:
    rules = {row[5] for row in CASES if row[3] is not None}
    assert rules >= {
        "syntax", "single-def", "self-param", "import", "dunder", "private-attribute",
        "forbidden-name", "unknown-name", "global", "nested-definition", "with", "yield",
        "async", "bare-except", "decorator", "forbidden-attribute", "covenant",
        "covenant-return",
    }  # fmt: skip


def test_message_names_line_and_rule() -> None:
    with pytest.raises(SafetyViolation) as info:
        check_source(src("def f(self):", "    x = 1", "    import os"), generated=True)
    assert str(info.value) == "line 3: import is not allowed in generated code (rule 'import')"


@pytest.mark.parametrize("error", [MalformedMethod, CovenantViolation, SafetyViolation])
def test_error_hierarchy(error: type[GuardianError]) -> None:
    assert issubclass(error, GuardianError)
    assert issubclass(error, PrototypeError)


def test_safety_is_only_for_generated_code() -> None:
    source = src("def f(self):", "    return getattr(self, 'x')")
    check_source(source, generated=False)
    with pytest.raises(SafetyViolation):
        check_source(source, generated=True)


def test_violations_lists_all_in_line_order() -> None:
    source = src("def f(self):", "    self.items.append(eval('1'))", "    import os")
    found = violations(source, generated=True)
    assert [(type(err), err.lineno, err.rule) for err in found] == [
        (SafetyViolation, 2, "forbidden-name"),
        (CovenantViolation, 2, "covenant"),
        (SafetyViolation, 3, "import"),
    ]


def test_safe_builtins_exclude_dangerous_names() -> None:
    allowed = safe_builtins()
    assert allowed["len"] is len
    assert not {"open", "eval", "exec", "__import__", "getattr", "print"} & allowed.keys()
