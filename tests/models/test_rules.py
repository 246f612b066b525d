"""models/rules.py: the condition language parses without eval, compiles to numpy, and explains its errors."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import ConfigError, RuleSettings, ScoringSettings
from features import FeatureRegistry
from models import Scorer, compile_condition, compile_rules
from models.rules import BLOCK, REVIEW

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_NAMES = ("a", "b", "c")
Row = tuple[float, ...]
Expression = tuple[str, Callable[[Row], bool]]


def _comparison(name: str, op: str, number: float, mirrored: bool) -> Expression:
    text = f"{number} {_mirror(op)} {name}" if mirrored else f"{name} {op} {number}"
    return text, lambda row: _OPS[op](row[_NAMES.index(name)], number)


def _mirror(op: str) -> str:
    return {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}[op]


comparisons = st.builds(
    _comparison, st.sampled_from(_NAMES), st.sampled_from(sorted(_OPS)),
    st.sampled_from([-2, -1, 0, 1, 2, 0.5, -1.5]), st.booleans(),
)  # fmt: skip


def _join(left: Expression, right: Expression, word: str) -> Expression:
    if word == "and":
        return f"({left[0]}) and ({right[0]})", lambda row: left[1](row) and right[1](row)
    return f"({left[0]}) or ({right[0]})", lambda row: left[1](row) or right[1](row)


def _negate(inner: Expression) -> Expression:
    return f"not ({inner[0]})", lambda row: not inner[1](row)


expressions = st.recursive(
    comparisons,
    lambda inner: st.one_of(st.builds(_join, inner, inner, st.sampled_from(["and", "or"])), st.builds(_negate, inner)),
    max_leaves=8,
)
rows = st.lists(st.tuples(*[st.sampled_from([-2.0, -1.5, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0])] * 3), min_size=1, max_size=40)


@given(expressions, rows)
@settings(max_examples=300, deadline=None)
def test_compiled_conditions_equal_a_row_by_row_evaluation(expression: Expression, data: list[Row]) -> None:
    text, brute_force = expression
    matrix = np.array(data, dtype=np.float64)
    assert compile_condition(text, _NAMES)(matrix).tolist() == [brute_force(row) for row in data]


@pytest.mark.parametrize(
    ("when", "rows", "expected"),
    [
        ("a > 1", [[2, 0, 0], [1, 0, 0]], [True, False]),
        ("1 < a", [[2, 0, 0], [1, 0, 0]], [True, False]),
        ("a >= -1.5 and b == 0", [[-1.5, 0, 9], [-2, 0, 9], [0, 1, 9]], [True, False, False]),
        ("not a < 1 or c != 0", [[0, 0, 1], [0, 0, 0], [1, 0, 0]], [True, False, True]),
        ("a > 1e3 or b <= +2", [[2000, 5, 0], [0, 2, 0], [0, 3, 0]], [True, True, False]),
        ("(a > 0 or b > 0) and not (c > 0)", [[1, 0, 0], [0, 1, 1], [0, 0, 0]], [True, False, False]),
    ],
)
def test_valid_conditions(when: str, rows: list[list[float]], expected: list[bool]) -> None:
    assert compile_condition(when, _NAMES)(np.array(rows, dtype=np.float64)).tolist() == expected


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("speed > 900", "unknown feature 'speed' (did you mean: speed_kmh?)"),
        ("amount >", "not a valid condition (invalid syntax); write comparisons, e.g. `speed_kmh > 900"),
        ("(amount > 1", "not a valid condition ('(' was never closed)"),
        ("amount > count_1h", "compares amount with `count_1h`, not a number; compare features with numbers"),
        ("1 < amount < 5", "chains comparisons; join them with `and`, e.g. `amount > 1 and amount < 5`"),
        ("new_country", "`new_country` alone is not a condition; compare it with a number, e.g. `new_country == 1`"),
        ("amount + 1 > 2", "`amount + 1 > 2` does not compare a feature; use comparisons (< <= > >= == !=)"),
        ("amount > 1 & amount < 5", "`&` and `|` are not allowed; join comparisons with `and` / `or`"),
        ("amount in (1, 2)", "uses an operator that is not allowed"),
        ("amount is 1", "uses an operator that is not allowed"),
        ("__import__('os').system('true')", "`__import__('os').system('true')` is not allowed; use comparisons"),
        ("amount.real > 1", "does not compare a feature"),
        ("amount > True", "compares amount with `True`, not a number"),
        ("lambda: 1", "is not allowed"),
    ],
)
def test_invalid_rules_stop_start_up_with_one_line_naming_rule_problem_and_fix(
    registry: FeatureRegistry, when: str, problem: str
) -> None:
    rules = (
        RuleSettings(name="fine", when="amount > 1"),
        RuleSettings(name="broken", when=when),
    )
    with pytest.raises(ConfigError) as error:
        Scorer.from_settings(ScoringSettings(rules=rules), registry)
    message = str(error.value)
    assert message.startswith("config error: scoring.rules[1].when: rule 'broken': "), message
    assert problem in message and "\n" not in message, message


def test_an_unknown_feature_without_close_matches_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown feature 'zzz' \(known features: a, b, c\)"):
        compile_condition("zzz > 1", _NAMES)


def test_compiled_rules_keep_name_action_and_score() -> None:
    rules = compile_rules(
        (RuleSettings(name="r", when="a > 1", action="block", score=0.99), RuleSettings(name="s", when="b < 0")),
        _NAMES,
    )
    assert [(r.name, r.action, r.score) for r in rules] == [("r", BLOCK, 0.99), ("s", REVIEW, 0.9)]
    assert rules[0].predicate(np.array([[2.0, 0, 0]])).tolist() == [True]


def test_conditions_are_never_evaluated_as_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr("builtins.eval", forbidden)
    monkeypatch.setattr("builtins.exec", forbidden)
    predicate = compile_condition("a > 1 and not b < 0", _NAMES)
    assert predicate(np.array([[2.0, 0.0, 0.0]])).tolist() == [True]
