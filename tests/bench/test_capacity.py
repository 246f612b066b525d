"""The capacity plan: properties of the plan computation, and one tiny measured run with the keys the doc names."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from bench.capacity import (
    Assumptions,
    Inputs,
    Measured,
    arguments,
    controller_model,
    fan_in,
    partitions_per_key,
    plan,
    power_of_two_at_least,
    report,
    run,
    table_model,
    without_devices,
)

GIB = 1024**3


def _measured(**changes: object) -> Measured:
    """Figures of the order bench/capacity.py measures (the plan's properties must not depend on them)."""
    figures = Measured(
        account_memory_base=1500.0, account_memory_per_event=31.0, account_checkpoint_base=180.0,
        account_checkpoint_per_event=8.0, account_encode_s_base=1e-5, account_encode_s_per_event=8e-8,
        account_restore_s_base=5e-6, account_restore_s_per_event=7e-8,
        pending_memory=360.0, pending_checkpoint=20.0, pending_encode_s=8e-7, pending_restore_s=6e-7,
        scorer_memory_fixed=19e6, scorer_memory_per_row=134.0, scorer_checkpoint_fixed=265e3,
        scorer_checkpoint_per_row=97.0,
        table_key_bytes=570.0, table_bucket_bytes=60.0, table_day_bytes=64.0, share_checkpoint_per_entry=4.3,
        stage_memory_per_entry=145.0, stage_checkpoint_per_entry=15.0,
        keys_per_account={"terminal": 0.3, "merchant": 0.1, "device": 1.5},
        key_share={"terminal": 0.77, "merchant": 1.0, "device": 0.23},
        accounts_per_key={"terminal": [[1, 10], [30, 50], [200, 5]], "merchant": [[80, 10]], "device": [[1, 100]]},
        transaction_bytes=257.0, label_bytes=102.0, labels_per_transaction=0.1, alert_bytes=794.0,
        alerts_per_transaction=0.003, delta_record_bytes=51.0, delta_entry_bytes=49.0, risk_record_bytes=63.0,
        risk_state_bytes=56.0, stage_s_per_record=2e-7, stage_s_per_entry=1.7e-6, flush_s_per_state=4.4e-6,
        flush_s_per_state_per_source=5e-8, broadcast_s_per_state=1e-6, expire_s_per_key=1.5e-6,
        status_s_base=0.0, status_s_per_actor=1e-4, status_bytes_per_partition=1740.0,
        process_rss_bytes=260e6, history_tx_per_account_day=2.8,
    )  # fmt: skip
    return replace(figures, **changes)


def _inputs(**assumptions: object) -> Inputs:
    return Inputs(_measured(), replace(Assumptions(), **assumptions))


def test_power_of_two() -> None:
    assert [power_of_two_at_least(n) for n in (0.5, 1, 2, 5, 1024, 1025)] == [1, 1, 2, 8, 1024, 2048]


def test_more_transactions_never_need_fewer_actors_and_an_impossible_plan_stays_impossible() -> None:
    inputs = _inputs(accounts=1_000_000, memory_per_node=1024 * GIB)
    plans = [plan(inputs, tps) for tps in (100, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)]
    feasible = [p for p in plans if p["feasible"]]
    assert len(feasible) >= 4
    assert [p["actors"] for p in feasible] == sorted(p["actors"] for p in feasible)
    # (an impossible plan is laid out at the K scoring alone needs, docs/capacity.md says so: not compared)
    assert [p["partitions"] for p in feasible] == sorted(p["partitions"] for p in feasible)
    first_impossible = next((i for i, p in enumerate(plans) if not p["feasible"]), len(plans))
    assert all(not p["feasible"] for p in plans[first_impossible:])
    # what makes 1M/s impossible here: every actor applies every risk state
    assert not plans[-1]["feasible"] and any("broadcast CPU" in limit for limit in plans[-1]["limits"])


def test_layout_rule_every_actor_owns_partitions_and_stage_partitions() -> None:
    inputs = _inputs(memory_per_node=1024 * GIB)
    for tps in (1_000, 20_000, 200_000):
        p = plan(inputs, tps)
        assert p["feasible"]
        actors, partitions = p["actors"], p["partitions"]
        assert partitions >= 2 * actors and partitions == power_of_two_at_least(partitions)
        assert p["stage_partitions"] == partitions // 2 >= actors
        assert p["nodes"] == math.ceil(actors / p["actors_per_node"])
        assert p["actors"] * 0.7 >= p["cpu"]["scoring_cores"]  # the utilization target leaves headroom


def test_memory_bound_plans_add_actors_until_one_fits_a_node_or_say_why_none_can() -> None:
    roomy = plan(_inputs(accounts=2_000_000, memory_per_node=1024 * GIB), 20_000)
    tight = plan(_inputs(accounts=2_000_000, memory_per_node=32 * GIB), 20_000)
    assert roomy["feasible"] and tight["feasible"]
    assert tight["cpu_actors"] == roomy["actors"] < tight["actors"]
    assert tight["memory"]["gib_per_actor"] <= 32 < roomy["memory"]["gib_per_actor"]
    assert tight["nodes"] == tight["actors"] // tight["actors_per_node"]
    # every actor holds the whole broadcast table: when it alone nearly fills a node, no K helps
    hopeless = plan(_inputs(accounts=2_000_000, memory_per_node=16 * GIB), 20_000)
    assert not hopeless["feasible"] and hopeless["nodes"] is None
    assert hopeless["memory"]["broadcast_gib_per_actor"] > 16
    assert any(limit.startswith("memory: one actor needs") for limit in hopeless["limits"])


def test_memory_scales_with_accounts() -> None:
    small = _inputs(accounts=1_000_000, memory_per_node=1024 * GIB)
    large = _inputs(accounts=10_000_000, memory_per_node=1024 * GIB)
    per_account_day = 3.0  # the same activity per account
    a = plan(small, 1_000_000 * per_account_day / 86_400)
    b = plan(large, 10_000_000 * per_account_day / 86_400)
    assert a["feasible"] and b["feasible"]
    assert a["memory"]["bytes_per_account"] == b["memory"]["bytes_per_account"]
    assert b["memory"]["accounts_gib_total"] == pytest.approx(10 * a["memory"]["accounts_gib_total"], rel=0.01)
    assert b["memory"]["total_gib"] > 5 * a["memory"]["total_gib"]
    assert b["memory"]["broadcast_gib_per_actor"] > 5 * a["memory"]["broadcast_gib_per_actor"]
    assert b["checkpoint"]["gb_per_round"] > 5 * a["checkpoint"]["gb_per_round"]


def test_more_events_per_account_cost_more_until_the_window_is_capped() -> None:
    inputs = _inputs(accounts=1_000_000, memory_per_node=1024 * GIB)
    per_account = [plan(inputs, tps)["memory"]["bytes_per_account"] for tps in (10, 100, 1_000, 10_000, 100_000)]
    assert per_account == sorted(per_account)
    assert per_account[-1] == per_account[-2]  # 2,000 events per account at most (max_events_per_account)


def test_partitions_per_key() -> None:
    inputs = _inputs()
    assert partitions_per_key(inputs, "device", 64) == pytest.approx(1.0)  # one account: one partition
    spread = [partitions_per_key(inputs, "terminal", n) for n in (1, 2, 8, 64, 4096)]
    assert spread[0] == 1.0 and spread == sorted(spread)
    assert spread[-1] < (10 * 1 + 50 * 30 + 5 * 200) / 65  # never more partitions than accounts using the key
    assert partitions_per_key(inputs, "merchant", 4) == pytest.approx(4 * (1 - 0.75**80))


def test_table_model_shares_and_devices() -> None:
    inputs = _inputs()
    table = table_model(inputs, 10_000)
    shares = [table_model(inputs, 10_000, sources=n) for n in (1, 8, 64)]
    assert shares[0] == table
    # each partition holds less, all of them together at least the table's keys (a shared key is in several)
    for n, share in zip((8, 64), shares[1:]):
        assert share["keys"] < table["keys"] <= n * share["keys"] * 1.0001
    lean = table_model(without_devices(inputs), 10_000)
    assert lean["memory_bytes"] < table["memory_bytes"] and lean["keys"] < table["keys"]


def test_fan_in_grows_with_partitions_squared() -> None:
    inputs = _inputs()
    rows = [fan_in(inputs, 100_000, n) for n in (8, 64, 512, 4096)]
    for row in rows:
        n = row["partitions"]
        assert row["delta_records_per_s"] == n * (n // 2) / 0.5  # every source to every stage partition
        assert row["records_per_s_per_stage_partition"] == n / 0.5
    # the broadcast does not get cheaper with more actors: every one applies every state
    assert len({row["broadcast_core_share_per_actor"] for row in rows}) == 1
    egress = [row["terminal_risk_egress_mb_per_s"] for row in rows]
    assert egress == sorted(egress)


def test_controller_rounds_grow_with_actors() -> None:
    inputs = _inputs(per_actor_eps=5_000.0, ray_call_s=0.001)
    rows = [controller_model(inputs, k) for k in (8, 64, 512)]
    assert [r["heartbeat_round_s_live"] for r in rows] == [0.008, 0.064, 0.512]
    assert rows[1]["heartbeat_round_s_backlog"] == pytest.approx(64 * (0.001 + 0.1))  # half a 1,000-record step


def test_a_tiny_measured_run_has_what_the_doc_names(tmp_path: Path) -> None:
    args = arguments(["--accounts", "200", "--days", "3", "--partitions", "4", "--stage-partitions", "2",
                      "--round-events", "400", "--groups", "3", "--controller-actors", "2,4"])  # fmt: skip
    output = run(args, Console(file=io.StringIO()))
    for key in ("machine", "workload", "records", "world", "accounts", "pending", "scorer", "terminal_table",
                "checkpoint", "broadcast_table", "shares", "stage", "controller", "process_rss_bytes", "inputs",
                "plan", "plan_without_devices", "fan_in", "controller_limits", "limits"):  # fmt: skip
        assert key in output, key
    assert output["workload"]["transactions"] > 1_000 and output["checkpoint"]["kind"] == "full"
    accounts = output["accounts"]
    assert accounts["memory_bytes_per_account"] > accounts["checkpoint_bytes_per_account"] > 0
    assert accounts["checkpoint_raw_bytes_per_account"] > accounts["checkpoint_bytes_per_account"]
    assert output["stage"]["delta_records"] == output["stage"]["rounds"] * 4 * 2
    assert set(output["plan"]) == {"10000", "100000", "1000000"}
    for p in output["plan"].values():
        for key in ("actors", "partitions", "nodes", "feasible", "limits"):
            assert key in p
        for section, key in (("memory", "gib_per_actor"), ("memory", "bytes_per_account"),
                             ("checkpoint", "s3_mb_per_s"), ("checkpoint", "interval_s"),
                             ("kafka", "ingress_mb_per_s"), ("kafka", "disk_tb"),
                             ("actor_start", "terminal_risk_replay_h")):  # fmt: skip
            assert p[section][key] is not None, (section, key)
    assert {row["partitions"] for row in output["fan_in"]} == {8, 64, 512, 4096}
    assert report(Inputs(_measured(), Assumptions()))["plan"].keys() == output["plan"].keys()
    # --replan: the same figures, planned again with another per-actor rate (nothing measured)
    saved = tmp_path / "capacity.json"
    saved.write_text(json.dumps(output))
    again = run(arguments(["--replan", str(saved)]), Console(file=io.StringIO()))
    assert again["plan"] == output["plan"] and again["accounts"] == output["accounts"]
    faster = run(arguments(["--replan", str(saved), "--per-actor-eps", "200000"]), Console(file=io.StringIO()))
    assert faster["inputs"]["assumptions"]["per_actor_eps"] == 200_000
    assert faster["plan"]["10000"]["cpu"]["scoring_cores"] < output["plan"]["10000"]["cpu"]["scoring_cores"]
