"""Decision rules: a tiny condition language over feature names, compiled to numpy.

A condition compares feature names with numbers (``<  <=  >  >=  ==  !=``),
joined by ``and`` / ``or`` / ``not`` and parentheses. It is parsed with Python's
``ast`` module and checked against that whitelist (nothing is ever evaluated),
then compiled into a function of the micro-batch matrix that returns one boolean
per row. Rules come from ``scoring.rules`` or a rules file (``scoring.rules_file``,
:func:`load_rules_file`); :func:`rules_fingerprint` tells a watcher the file changed.

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
import hashlib
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from configs import ConfigError, RuleSettings
from configs.settings import read_rules_file, review_score_problem

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
        return float(node.value)  # type: ignore[arg-type]  # an int or a float, just checked
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


def compile_rules(
    rules: tuple[RuleSettings, ...],
    features: tuple[str, ...],
    where: str = "scoring.rules",
    block_threshold: float | None = None,
) -> tuple[Rule, ...]:
    """Every rule checked and compiled; the first bad one is a ConfigError (one line) naming ``where[i]``, the rule,
    the problem and the fix.

    ``where`` names the rules in messages (``scoring.rules``, or ``<file>: rules`` for a rules file). Checked:
    unique names, the action, the score in [0, 1], with ``block_threshold`` a review rule scoring below it, and the
    condition.

    >>> compile_rules((RuleSettings(name="tiny", when="amount < 1 and", action="block"),), ("amount",))
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: config error: scoring.rules[0].when: rule 'tiny': not a valid condition (invalid syntax); write comparisons, e.g. `speed_kmh > 900 and distance_km > 300`
    """
    compiled = []
    first: dict[str, int] = {}
    for i, rule in enumerate(rules):
        key = f"config error: {where}[{i}]"
        if rule.name in first:
            raise ConfigError(f"{key}.name: rule {rule.name!r} is also {where}[{first[rule.name]}]; "
                              "give each rule its own name")  # fmt: skip
        first[rule.name] = i
        if rule.action not in ACTION_LEVEL:
            raise ConfigError(f"{key}.action: rule {rule.name!r}: {rule.action!r} is not an action "
                              "(allowed: 'review', 'block')")  # fmt: skip
        if not 0.0 <= rule.score <= 1.0:
            raise ConfigError(f"{key}.score: rule {rule.name!r}: {rule.score} is outside [0, 1]; "
                              "give a score in [0, 1]")  # fmt: skip
        problem = review_score_problem(rule, block_threshold) if block_threshold is not None else None
        if problem:
            raise ConfigError(f"{key}.score: {problem}")
        try:
            predicate = compile_condition(rule.when, features)
        except ValueError as exc:
            raise ConfigError(f"{key}.when: rule {rule.name!r}: {exc}") from None
        compiled.append(Rule(rule.name, rule.when, ACTION_LEVEL[rule.action], rule.score, predicate))
    return tuple(compiled)


def load_rules_file(
    path: str | os.PathLike[str], feature_names: Sequence[str], block_threshold: float | None = None
) -> tuple[RuleSettings, ...]:
    """The rules of a rules file (``scoring.rules_file``), parsed, checked and compiled against ``feature_names``.

    The file is YAML, ``rules: [{name, when, action, score}, ...]``, each rule as
    in ``scoring.rules``. Any problem (unreadable file, bad YAML, unknown key,
    bad action or score, duplicate name, a condition that does not compile, an
    unknown feature) is a ConfigError of one line naming the file, ``rules[i]``,
    the rule and the fix; nothing is returned then, so a caller keeps its old rules.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    ...     _ = f.write("rules:\\n  - {name: fast, when: 'speed > 900', action: block, score: 0.99}\\n")
    >>> load_rules_file(f.name, ("amount", "speed_kmh"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: config error: /...yaml: rules[0].when: rule 'fast': unknown feature 'speed' (did you mean: speed_kmh?)
    """
    rules = read_rules_file(path)
    compile_rules(rules, tuple(feature_names), where=f"{Path(path)}: rules", block_threshold=block_threshold)
    return rules


def rules_fingerprint(path: str | os.PathLike[str]) -> str:
    """What changes when the file at ``path`` changes: modification time, size and a BLAKE2b hash of the content.

    Cheap enough to call every second (one ``stat`` and one read of a small
    file). Never raises: a missing or unreadable file has a fingerprint of its
    own (``missing: ...``), so a watcher sees the change and
    :func:`load_rules_file` reports it.
    """
    try:
        with open(path, "rb") as file:
            stat = os.fstat(file.fileno())
            digest = hashlib.blake2b(file.read(), digest_size=16).hexdigest()
    except OSError as exc:
        return f"missing: {exc.strerror or exc}"
    return f"{stat.st_mtime_ns}-{stat.st_size}-{digest}"
