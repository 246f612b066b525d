"""An alert's reasons in words: each matched rule with its condition, each top feature with what it measures.

The rules' conditions come from ``scoring.rules`` and the features'
descriptions from the feature registry, the same sources the scorer used. A
feature's contribution (:class:`~models.sources.AnomalySource`) is how many
standard deviations its (log) value lies from the account population's recent
typical value.

>>> from configs import Settings
>>> from contracts import Alert, FeatureContribution, Reasons
>>> alert = Alert(alert_id="a1", transaction_id="t1", account_id="acc-7", event_time=1767225600000, score=0.99,
...               decision="block", reasons=Reasons(rules=["card_testing"], top_features=[
...                   FeatureContribution(name="count_10m", value=5.0, contribution=3.2)]),
...               model_versions={}, feature_version="fs1", ingest_time=1767225600000, alert_time=1767225600000)
>>> explainer = Explainer(Settings())
>>> print(*explainer.rules(alert), *explainer.features(alert), sep="\\n")
rule card_testing (block): count_10m >= 3 and mean_10m < 3
count_10m = 5: account transactions in the last 10m of event time, this one included; far above typical (+3.2 sd)
"""

from __future__ import annotations

from configs import Settings
from contracts.records import Alert, FeatureContribution
from features.registry import FeatureRegistry
from pipelines.alerts import why


def _how_far(contribution: float) -> str:
    """Words for a contribution in standard deviations from the typical value.

    >>> _how_far(0.4), _how_far(-1.5), _how_far(4.0)
    ('near typical (+0.4 sd)', 'below typical (-1.5 sd)', 'far above typical (+4 sd)')
    """
    side = "above" if contribution > 0 else "below"
    size = abs(contribution)
    words = "near typical" if size < 1 else f"{side} typical" if size < 3 else f"far {side} typical"
    return f"{words} ({contribution:+.2g} sd)"


class Explainer:
    """Words for the rules and features an alert names, from the settings the job scored with."""

    def __init__(self, settings: Settings) -> None:
        self.rule_settings = {rule.name: rule for rule in settings.scoring.rules}
        self.descriptions = {spec.name: spec.description for spec in FeatureRegistry.from_settings(settings.features).specs}

    def rules(self, alert: Alert) -> list[str]:
        """One line per matched rule: its name, action and condition (the name alone for a rule not configured here)."""
        lines = []
        for name in alert.reasons.rules:
            rule = self.rule_settings.get(name)
            lines.append(f"rule {name} ({rule.action}): {rule.when}" if rule else f"rule {name}")
        return lines

    def feature(self, feature: FeatureContribution) -> str:
        """``name = value: what it measures; how far from typical``."""
        described = self.descriptions.get(feature.name)
        what = f": {described}" if described else ""
        return f"{feature.name} = {feature.value:,.4g}{what}; {_how_far(feature.contribution)}"

    def features(self, alert: Alert) -> list[str]:
        return [self.feature(feature) for feature in alert.reasons.top_features]

    def summary(self, alert: Alert) -> str:
        """A short why for a queue row (:func:`pipelines.alerts.why`, as the demo's dashboard shows it)."""
        return why(alert)
