"""An alert's reasons in words, from the rules and feature descriptions of the settings."""

from __future__ import annotations

import msgspec

from configs import RuleSettings, ScoringSettings, Settings
from contracts import FeatureContribution, Reasons
from pipelines.console.explain import Explainer
from tests.pipelines.console.consolekit import alert


def test_rules_read_with_their_condition_and_features_with_what_they_measure() -> None:
    scoring = ScoringSettings(rules=(RuleSettings(name="huge", when="amount > 5000", action="block", score=0.99),))
    explainer = Explainer(Settings(scoring=scoring))
    reasons = Reasons(rules=["huge", "retired_rule"], top_features=[
        FeatureContribution(name="amount", value=9000.0, contribution=4.2),
        FeatureContribution(name="count_1h", value=1.0, contribution=-1.2),
        FeatureContribution(name="not_a_feature", value=0.5, contribution=0.1)])  # fmt: skip
    subject = msgspec.structs.replace(alert(1), reasons=reasons)
    assert explainer.rules(subject) == ["rule huge (block): amount > 5000", "rule retired_rule"]
    assert explainer.features(subject) == [
        "amount = 9,000: transaction amount; far above typical (+4.2 sd)",
        "count_1h = 1: account transactions in the last 1h of event time, this one included; below typical (-1.2 sd)",
        "not_a_feature = 0.5; near typical (+0.1 sd)",
    ]
    assert explainer.summary(subject) == "rule huge, rule retired_rule, amount=9,000"
