"""The mypyc-compiled feature kernel (with the C window when built) computes exactly what the pure-Python
source does."""

from __future__ import annotations

import os

import msgspec
import pytest

import features
from configs import FeatureSettings, load_settings
from contracts import Transaction
from contracts.arrow import table_to_records
from features import _impl
from features import engine as pure_engine
from features.ckernel import CEventWindow, CRecentDistinct
from features.offline import history_transactions
from synthetic import generate


def test_ci_runs_the_compiled_kernel() -> None:
    if os.environ.get("CI") != "true" or os.environ.get("FRAUDSTREAM_PURE_PYTHON"):
        pytest.skip("only enforced in CI, where the install compiles the kernel")
    assert features.COMPILED, "pip install did not build the mypyc kernel (see setup.py output)"
    assert CEventWindow is not None and CRecentDistinct is not None, \
        "pip install did not build features/_ckernel.c (see setup.py output)"


@pytest.mark.skipif(not _impl.COMPILED, reason="compiled kernel not built here (pure Python only)")
def test_compiled_and_pure_give_identical_vectors() -> None:
    settings = load_settings()
    spec = msgspec.structs.replace(settings.generator, accounts=400, days=12, seed=5, out_of_order_rate=0.05,
                                   late_rate=0.01)
    history = generate(spec)
    transactions = table_to_records(history_transactions(history.transactions, "delivery"), Transaction)
    feature_settings = FeatureSettings(allowed_lateness_s=60)
    compiled = _impl.FeatureEngine(feature_settings)
    pure = pure_engine.FeatureEngine(feature_settings, c_twins=False)  # all Python
    assert type(compiled) is not type(pure)
    late_seen = 0
    for tx in transactions:
        got, want = compiled.transform_one(tx), pure.transform_one(tx)
        assert got == want, tx.transaction_id
        late_seen += got[1]
    assert late_seen > 0
    assert compiled.stats.late_events == pure.stats.late_events == late_seen
