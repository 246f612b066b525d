"""Decision rules: a tiny condition language over feature names, compiled to numpy.

A condition compares feature names with numbers (``<  <=  >  >=  ==  !=``),
joined by ``and`` / ``or`` / ``not`` and parentheses. It is parsed with Python's
``ast`` module and checked against that whitelist (nothing is ever evaluated),
then compiled into a function of the micro-batch matrix that returns one boolean
per row.

>>> import numpy as np
>>> match = compile_condition("speed_kmh > 900 and (distance_km >= 300 or not amount < 10)",
...                           ("amount", "distance_km", "speed_kmh"))
>>> match(np.array([[5.0, 400.0, 1000.0], [5.0, 100.0, 1000.0], [50.0, 100.0, 1000.0], [50.0, 900.0, 10.0]]))
array([ True, False,  True, False])
>>> compile_condition("speed > 1", ("speed_kmh", "amount"))
Traceback (most recent call last):
...
ValueError: unknown feature 'speed' (did you mean: speed_kmh?)
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from configs import ConfigError, RuleSettings

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
Predicate = Callable[[FloatArray], BoolArray]

#: Decision levels: what a rule (or a threshold) asks for, ordered so that max() combines them.
NO_ACTION, REVIEW, BLOCK = 0, 1, 2
ACTION_LEVEL = {"review": REVIEW, "block": BLOCK}

_EXAMPLE = "e.g. `speed_kmh > 900 and distance_km > 300`"
_ALLOWED = "use comparisons (< <= > >= == !=) of a feature with a number, and, or, not, parentheses"
_COMPARE: dict[type[ast.cmpop], Callable[[FloatArray, float], BoolArray]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
#: `5 < amount` is read as `amount > 5`.
_MIRRORED: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.Gt,
    ast.LtE: ast.GtE,
    ast.Gt: ast.Lt,
    ast.GtE: ast.LtE,
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
}


def _number(node: ast.expr) -> float | None:
    """The value of a numeric literal (with an optional sign), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    return None


def compile_condition(when: str, features: tuple[str, ...]) -> Predicate:
    """A vectorised predicate over matrices whose columns are ``features``.

    ValueError says what is wrong and how to fix it, in one line.
    """
    try:
        tree = ast.parse(when.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid condition ({exc.msg}); write comparisons, {_EXAMPLE}") from None
    if any(isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)) for node in ast.walk(tree)):
        raise ValueError("`&` and `|` are not allowed; join comparisons with `and` / `or`")
    column = {name: i for i, name in enumerate(features)}

    def feature(name: str) -> int:
        if name not in column:
            close = difflib.get_close_matches(name, features, n=3, cutoff=0.6)
            hint = f"did you mean: {', '.join(close)}?" if close else f"known features: {', '.join(features)}"
            raise ValueError(f"unknown feature {name!r} ({hint})")
        return column[name]

    def build(node: ast.expr) -> Predicate:
        if isinstance(node, ast.BoolOp):
            parts = [build(value) for value in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

            def joined(m: FloatArray) -> BoolArray:
                result = parts[0](m)
                for part in parts[1:]:
                    result = combine(result, part(m))
                return result

            return joined
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = build(node.operand)
            return lambda m: np.logical_not(inner(m))
        if isinstance(node, ast.Compare):
            return comparison(node)
        if isinstance(node, ast.Name):
            raise ValueError(f"`{node.id}` alone is not a condition; compare it with a number, e.g. `{node.id} == 1`")
        raise ValueError(f"`{ast.unparse(node)}` is not allowed; {_ALLOWED}")

    def comparison(node: ast.Compare) -> Predicate:
        text = ast.unparse(node)
        if len(node.ops) > 1:
            raise ValueError(f"`{text}` chains comparisons; join them with `and`, e.g. `amount > 1 and amount < 5`")
        op, left, right = type(node.ops[0]), node.left, node.comparators[0]
        if op not in _COMPARE:
            raise ValueError(f"`{text}` uses an operator that is not allowed; {_ALLOWED}")
        if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
            left, right, op = right, left, _MIRRORED[op]
        if not isinstance(left, ast.Name):
            raise ValueError(f"`{text}` does not compare a feature; {_ALLOWED}")
        value = _number(right)
        if value is None:
            raise ValueError(f"`{text}` compares {left.id} with `{ast.unparse(right)}`, not a number; "
                             "compare features with numbers, e.g. `amount > 100`")
        index, compare = feature(left.id), _COMPARE[op]
        return lambda m: compare(m[:, index], value)

    return build(tree.body)


@dataclass(frozen=True)
class Rule:
    """A compiled rule: when ``predicate`` matches a row, the fused score is at least ``score`` and the decision at
    least ``action`` (a level: REVIEW or BLOCK)."""

    name: str
    when: str
    action: int
    score: float
    predicate: Predicate


def compile_rules(rules: tuple[RuleSettings, ...], features: tuple[str, ...]) -> tuple[Rule, ...]:
    """Every configured rule compiled; the first bad one stops start-up with a ConfigError naming it.

    >>> compile_rules((RuleSettings(name="tiny", when="amount < 1 and", action="block"),), ("amount",))
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: config error: scoring.rules[0].when: rule 'tiny': not a valid condition (invalid syntax); write comparisons, e.g. `speed_kmh > 900 and distance_km > 300`
    """
    compiled = []
    for i, rule in enumerate(rules):
        try:
            predicate = compile_condition(rule.when, features)
        except ValueError as exc:
            raise ConfigError(f"config error: scoring.rules[{i}].when: rule {rule.name!r}: {exc}") from None
        compiled.append(Rule(rule.name, rule.when, ACTION_LEVEL[rule.action], rule.score, predicate))
    return tuple(compiled)
