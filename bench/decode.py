"""Typed, validated decode throughput vs plain json.loads on the same bytes.

Prints one JSON line: decode_per_s (contracts.decode_transactions: msgspec decode
into frozen Transaction structs with every constraint checked and errors
collected) and json_loads_per_s (json.loads into dicts, no validation), measured
in the same run, on one core, best of --repeat passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import generated, pin_to_one_core

from contracts import decode_transactions
from models.checked_settings import load_settings
from pipelines.produce import encode_transactions


def best_rate(fn, values: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(values)
        best = min(best, time.perf_counter() - started)
    return len(values) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pin_to_one_core()

    history = generated(load_settings(), accounts=max(1_000, args.events // 25), days=12, seed=3)
    _, values, _ = encode_transactions(history.transactions.slice(0, args.events))
    while len(values) < args.events:
        values.extend(values[: args.events - len(values)])

    good, bad = decode_transactions(values)
    assert len(good) == len(values) and not bad, "generated transactions must all decode"

    decode_per_s = best_rate(decode_transactions, values, args.repeat)
    json_loads_per_s = best_rate(lambda vs: [json.loads(v) for v in vs], values, args.repeat)
    print(
        json.dumps(
            {
                "decode_per_s": round(decode_per_s),
                "json_loads_per_s": round(json_loads_per_s),
                "ratio": round(decode_per_s / json_loads_per_s, 2),
                "events": len(values),
                "mean_bytes": round(sum(map(len, values)) / len(values), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
