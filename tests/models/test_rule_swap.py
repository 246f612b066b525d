"""Rules swapped into a running scorer (a rules-file reload), and checkpoints that outlive a stateless source's
version (rules edited, another batch classifier) but not a learning source's configuration."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from configs import ConfigError, RuleSettings, ScoringSettings
from features import FeatureBatch, FeatureRegistry
from models import Scorer
from models.batch import BatchModel, ClassifierSource
from models.sources import RuleSource
from tests.models.conftest import Generated

Batch = Callable[[np.ndarray], FeatureBatch]
SMALL = RuleSettings(name="small", when="amount < 2", action="review", score=0.5)
BIG = RuleSettings(name="big", when="amount > 300", action="block", score=0.99)


def _settings(*rules: RuleSettings) -> ScoringSettings:
    return ScoringSettings(rules=rules)


def test_replaced_rules_decide_from_the_next_batch_and_the_learned_state_stays(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry
) -> None:
    values, amount = generated.values[:9_000], generated.values[:9_000, registry.index("amount")]
    swapped, kept = Scorer.from_settings(_settings(SMALL), registry), Scorer.from_settings(_settings(SMALL), registry)
    for scorer in (swapped, kept):
        scorer.process(make_batch(values[:6_000]))
    old_version = swapped.model_versions["rules"]
    swapped.replace_rules((BIG,))
    assert swapped.model_versions["rules"] == RuleSource((BIG,), registry).version != old_version
    assert swapped.model_versions.keys() == kept.model_versions.keys()
    assert [s.name for s in swapped.sources] == [s.name for s in kept.sources]  # same place, same order
    assert swapped.settings.rules == (BIG,)

    new, old = swapped.process(make_batch(values[6_000:])), kept.process(make_batch(values[6_000:]))
    np.testing.assert_array_equal(new.sources["anomaly"], old.sources["anomaly"])  # untouched by the swap
    tail = amount[6_000:]
    np.testing.assert_array_equal(new.sources["rules"], np.where(tail > 300, 0.99, 0.0))
    assert all(new.decision[i] == "block" for i in np.flatnonzero(tail > 300))
    assert any(old.decision[i] == "review" and "small" in old.reasons[i].rules for i in np.flatnonzero(tail < 2))
    assert not any(r is not None and "small" in r.rules for r in new.reasons)
    assert {name for r in new.reasons if r is not None for name in r.rules} == {"big"}
    # the state of everything that learns is the same as without the swap
    swapped.replace_rules((SMALL,))
    assert swapped.state_bytes() == kept.state_bytes()


def test_rules_can_be_removed_and_added_again(registry: FeatureRegistry, make_batch: Batch) -> None:
    scorer = Scorer.from_settings(_settings(SMALL), registry)
    scorer.replace_rules(())
    assert "rules" not in scorer.model_versions and all(s.name != "rules" for s in scorer.sources)
    values = np.ones((2, len(registry)))
    values[1, registry.index("amount")] = 500.0
    assert scorer.process(make_batch(values)).decision == [None, None]
    scorer.replace_rules((BIG,))
    assert scorer.sources[-1].name == "rules" and scorer.model_versions["rules"] == RuleSource((BIG,), registry).version
    assert scorer.process(make_batch(values)).decision == [None, "block"]


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ((RuleSettings(name="typo", when="amountt > 1"),), "scoring.rules[0].when: rule 'typo': unknown feature 'amountt'"),
        ((BIG, RuleSettings(name="big", when="amount > 1")), "scoring.rules[1].name: rule 'big' is also scoring.rules[0]"),
        ((RuleSettings(name="loud", when="amount > 1", action="review", score=0.9999),),
         "scoring.rules[0].score: review rule 'loud' has score 0.9999 >= block_threshold 0.9995"),
        ((RuleSettings(name="odd", when="amount > 1", action="alert"),),  # type: ignore[arg-type]
         "scoring.rules[0].action: rule 'odd': 'alert' is not an action"),
        ((RuleSettings(name="high", when="amount > 1", score=1.5),), "scoring.rules[0].score: rule 'high': 1.5 is outside"),
    ],
)
def test_a_bad_replacement_raises_and_leaves_the_old_rules(
    registry: FeatureRegistry, make_batch: Batch, rules: tuple[RuleSettings, ...], problem: str
) -> None:
    scorer = Scorer.from_settings(_settings(SMALL), registry)
    before = (dict(scorer.model_versions), scorer.sources, scorer.settings)
    with pytest.raises(ConfigError) as error:
        scorer.replace_rules(rules)
    assert str(error.value).startswith(f"config error: {problem}") and "\n" not in str(error.value)
    assert (scorer.model_versions, scorer.sources, scorer.settings) == before
    values = np.ones((1, len(registry)))
    assert scorer.process(make_batch(values)).reasons[0].rules == ["small"]  # amount 1 < 2


def test_errors_of_file_rules_name_the_file(registry: FeatureRegistry) -> None:
    settings = msgspec.structs.replace(_settings(SMALL), rules_file="/etc/fraudstream/rules.yaml")
    scorer = Scorer.from_settings(settings, registry)
    with pytest.raises(ConfigError, match=r"^config error: /etc/fraudstream/rules.yaml: rules\[0\].when: rule 'typo'"):
        scorer.replace_rules((RuleSettings(name="typo", when="amountt > 1"),))


def test_a_checkpoint_outlives_a_rules_change_but_not_an_anomaly_change(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry
) -> None:
    values = generated.values[:8_000]
    saved = Scorer.from_settings(_settings(SMALL), registry)
    saved.process(make_batch(values[:5_000]))
    blob = saved.state_bytes()

    for rules in ((BIG,), ()):  # other rules, no rules
        restored = Scorer.from_state(_settings(*rules), registry, blob)
        assert restored.model_versions.get("rules") == (RuleSource(rules, registry).version if rules else None)
        assert restored.model_versions["anomaly"] == saved.model_versions["anomaly"]
        np.testing.assert_array_equal(restored.process(make_batch(values[5_000:])).sources["anomaly"],
                                      Scorer.from_state(_settings(SMALL), registry, blob)
                                      .process(make_batch(values[5_000:])).sources["anomaly"])  # fmt: skip
    # a checkpoint saved without rules restores under rules too
    without = Scorer.from_state(_settings(), registry, blob)
    assert Scorer.from_state(_settings(BIG), registry, without.state_bytes()).model_versions["rules"]

    other_anomaly = msgspec.structs.replace(
        _settings(SMALL), anomaly=msgspec.structs.replace(ScoringSettings().anomaly, window_size=100)
    )
    with pytest.raises(ValueError, match=r"scorer state was saved for models .*'anomaly': 'river.HalfSpaceTrees:25x8w250s1") as e:
        Scorer.from_state(other_anomaly, registry, blob)
    assert "(sources that keep state)" in str(e.value) and "'rules'" not in str(e.value)


def test_a_checkpoint_taken_while_a_batch_classifier_was_served_restores_without_it(
    generated: Generated, make_batch: Batch, registry: FeatureRegistry
) -> None:
    columns = ("amount", "count_10m", "amount_ratio")
    x = pd.DataFrame(generated.values[:, [registry.index(c) for c in columns]], columns=list(columns))
    model = BatchModel(LogisticRegression(max_iter=500).fit(x, generated.is_fraud), columns, registry.version, "lr/3")
    base = Scorer.from_settings(_settings(SMALL), registry)
    served = Scorer(base.settings, registry, [*base.sources, ClassifierSource(model, registry, base.settings)])
    served.process(make_batch(generated.values[:3_000]))
    assert served.model_versions["classifier"] == "lr/3"
    restored = Scorer.from_state(_settings(SMALL), registry, served.state_bytes())  # the actors add it back
    assert "classifier" not in restored.model_versions
    for name in ("anomaly", "online"):  # what they learned came back
        a = next(s for s in restored.sources if s.name == name).state()
        b = next(s for s in served.sources if s.name == name).state()
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
