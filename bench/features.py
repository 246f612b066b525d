"""Feature throughput and state size against the shared reference workload.

On a generated stream (default 100k accounts × 30 days) in event-time order:
- events_per_s: PartitionedFeatures.transform_routed per event (full feature set,
  state updated, vector produced), one engine per partition as in the actors (the
  Kafka partition of each event is computed before timing, as a consumer receives it), one
  core, with the process GC settings the product uses (features/runtime.py);
- reference_per_s: ../shared/bench/reference_workload.py's update_features on the
  same events, in the same run;
- bytes_per_account: serialised account state (the checkpoint's Arrow IPC
  stream, zstd) after the 30 days, divided by the number of accounts;
  bytes_per_account_uncompressed: the same without compression.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))

import reference_workload  # noqa: E402
from benchlib import generated, ordered_transactions, pin_to_one_core  # noqa: E402
from rich.console import Console  # noqa: E402

import features  # noqa: E402
from features.offline import PartitionedFeatures  # noqa: E402
from features.runtime import configure_gc_for_streaming  # noqa: E402
from features.state import accounts_to_batch, ipc_bytes  # noqa: E402
from models.checked_settings import load_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    pin_to_one_core()
    console = Console(stderr=True)

    settings = load_settings()
    with console.status(f"generating {args.accounts:,} accounts × {args.days} days"):
        history = generated(settings, args.accounts, args.days, args.seed)
        transactions = ordered_transactions(history)
    n = len(transactions)
    del history
    # The benchmark's input lists are not part of the work measured: keep the cyclic
    # GC from walking millions of input objects (done the same way for the reference).
    gc.collect()
    gc.freeze()

    with console.status(f"features on {n:,} events"):
        configure_gc_for_streaming()
        topic = PartitionedFeatures(settings.features, args.partitions)
        # consumers receive their partition's records: routing is Kafka's work, not timed
        partitions = [topic.partition_of(tx.account_id) for tx in transactions]
        transform = topic.transform_routed
        started = time.perf_counter()
        for partition, tx in zip(partitions, transactions):
            transform(partition, tx)
        features_s = time.perf_counter() - started

    accounts = {k: v for engine in topic.engines for k, v in engine.accounts.items()}
    batch = accounts_to_batch(accounts)
    compressed = len(ipc_bytes(batch, "zstd"))
    raw = len(ipc_bytes(batch, None))
    account_count = len(accounts)
    registry = topic.registry
    del accounts, batch, topic
    gc.unfreeze()
    gc.collect()

    with console.status("reference workload on the same events"):
        events = [
            {"account_id": tx.account_id, "event_time": tx.event_time / 1000.0, "amount": tx.amount,
             "lat": tx.lat, "lon": tx.lon}
            for tx in transactions
        ]
        del transactions
        gc.collect()
        gc.freeze()
        states: dict[str, dict] = {}
        update = reference_workload.update_features
        started = time.perf_counter()
        for event in events:
            state = states.get(event["account_id"])
            if state is None:
                state = states[event["account_id"]] = {}
            update(state, event)
        reference_s = time.perf_counter() - started

    print(
        json.dumps(
            {
                "events_per_s": round(n / features_s),
                "reference_per_s": round(n / reference_s),
                "ratio_to_reference": round((n / features_s) / (n / reference_s), 3),
                "bytes_per_account": round(compressed / account_count, 1),
                "bytes_per_account_uncompressed": round(raw / account_count, 1),
                "events": n,
                "accounts": account_count,
                "days": args.days,
                "features": len(registry),
                "feature_version": registry.version,
                "compiled": features.COMPILED,
            }
        )
    )


if __name__ == "__main__":
    main()
