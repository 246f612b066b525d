"""Decision rules: a tiny expression language over feature names, compiled to numpy.

``when`` compares feature names with numbers (``< <= > >= == !=``), joined by
``and`` / ``or`` / ``not`` and parentheses. It is parsed with Python's ``ast``
and a whitelist (nothing is evaluated), then compiled into a function of the
micro-batch matrix that returns one boolean per row.

>>> rule = compile_rule("fast", "speed_kmh > 900 and (distance_km >= 300 or not amount < 10)",
...                     ("amount", "distance_km", "speed_kmh"))
>>> import numpy as np
>>> rule(np.array([[5.0, 400.0, 1000.0], [5.0, 100.0, 1000.0], [50.0, 100.0, 1000.0], [50.0, 900.0, 10.0]]))
array([ True, False,  True, False])
>>> compile_rule("bad", "speed > 1", ("speed_kmh",))
Traceback (most recent call last):
...
configs.settings.ConfigError: config error: scoring.rules[bad].when: unknown feature 'speed' (did you mean: speed_kmh?)
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from configs import ConfigError, RuleSettings

Predicate = Callable[[np.ndarray], np.ndarray]

_COMPARE: dict[type[ast.cmpop], Callable[[np.ndarray, float], np.ndarray]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_MIRROR: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq,
}


def compile_rule(name: str, when: str, features: tuple[str, ...]) -> Predicate:
    """A vectorised predicate for ``when``; ConfigError (one line, with the fix) when it is not valid."""
    where = f"scoring.rules[{name}].when"
    try:
        tree = ast.parse(when.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"config error: {where}: not a valid expression ({exc.msg}); "
                          "write comparisons like `speed_kmh > 900 and distance_km > 300`") from None
    index = {feature: i for i, feature in enumerate(features)}

    def column(node: ast.expr) -> int:
        assert isinstance(node, ast.Name)
        if node.id not in index:
            close = difflib.get_close_matches(node.id, features, n=3)
            hint = f"did you mean: {', '.join(close)}?" if close else f"known features: {', '.join(features)}"
            raise ConfigError(f"config error: {where}: unknown feature {node.id!r} ({hint})")
        return index[node.id]

    def number(node: ast.expr) -> float:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -number(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        raise ConfigError(f"config error: {where}: expected a number, got {ast.unparse(node)!r}")

    def build(node: ast.expr) -> Predicate:
        if isinstance(node, ast.BoolOp):
            parts = [build(v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            def boolean(m: np.ndarray) -> np.ndarray:
                result = parts[0](m)
                for part in parts[1:]:
                    result = combine(result, part(m))
                return result
            return boolean
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = build(node.operand)
            return lambda m: np.logical_not(inner(m))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            left, right, op = node.left, node.comparators[0], type(node.ops[0])
            if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
                left, right, op = right, left, _MIRROR[op]
            if not isinstance(left, ast.Name):
                raise ConfigError(f"config error: {where}: compare a feature name with a number, "
                                  f"got {ast.unparse(node)!r}")
            col, value, compare = column(left), number(right), _COMPARE[op]
            return lambda m: compare(m[:, col], value)
        raise ConfigError(
            f"config error: {where}: {ast.unparse(node)!r} is not allowed; use comparisons "
            "(< <= > >= == !=) of a feature with a number, and/or/not, parentheses"
        )

    return build(tree.body)


@dataclass(frozen=True)
class Rule:
    """A compiled rule."""

    name: str
    action: str
    score: float
    predicate: Predicate

    @classmethod
    def from_settings(cls, rule: RuleSettings, features: tuple[str, ...]) -> Rule:
        return cls(rule.name, rule.action, rule.score, compile_rule(rule.name, rule.when, features))
