"""Synthetic history throughput: generate + write Parquet, on one core.

Prints one JSON line: generate_per_s (transactions per second for
``synthetic.generate`` plus ``write_history``, best of --repeat runs),
the transaction count, the achieved fraud rate and the per-phase seconds.

    python bench/generate.py --accounts 20000 --days 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.settings import GeneratorSettings
from synthetic import generate, write_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="output directory (a temporary one by default)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the best is reported")
    args = parser.parse_args()

    settings = GeneratorSettings(accounts=args.accounts, days=args.days, seed=args.seed)
    best: tuple[float, float, float] | None = None
    transactions = 0
    fraud_rate = 0.0
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        out_dir = args.out if args.out is not None else Path(tmp)
        for _ in range(max(args.repeat, 1)):
            started = time.perf_counter()
            history = generate(settings)
            generated = time.perf_counter()
            write_history(history, out_dir)
            written = time.perf_counter()
            run = (written - started, generated - started, written - generated)
            if best is None or run[0] < best[0]:
                best = run
            transactions, fraud_rate = history.transactions.num_rows, history.fraud_rate
            del history
    assert best is not None
    print(
        json.dumps(
            {
                "generate_per_s": round(transactions / best[0]),
                "transactions": transactions,
                "accounts": args.accounts,
                "days": args.days,
                "fraud_rate": round(fraud_rate, 5),
                "seconds": round(best[0], 3),
                "generate_seconds": round(best[1], 3),
                "write_seconds": round(best[2], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
