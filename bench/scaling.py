"""Scaling: events/s and latency for K = 1, 2, 4 scoring actors over 8 partitions on a multi-node Ray cluster.

A Ray cluster of several nodes on this machine (tests/integration/raycluster.py: a head with no CPUs and
``--nodes`` worker nodes of one logical CPU each), the embedded broker, and the job's actors spread over the
nodes (``stream.placement: spread``, one CPU per actor, so K actors hold K nodes). For each K, on topics of its
own with ``--partitions`` partitions (default 8), bench/pipeline.py's two phases:
- phase 1: ``--events`` generated transactions produced first, then scored by K actors:
  total events_per_s = M / (first event polled -> last offset committed, over the actors); per actor, the
  transactions its partitions scored / (its own first poll -> its last commit); lost = produced minus scored;
- phase 2: a producer at a steady ``--steady-rate`` events/s: per scored event the time from its Kafka
  timestamp to the acknowledgement of its micro-batch's alerts (p50_ms, p95_ms, p99_ms).
Reference, in the same run: the shared reference workload's plain loop (one aiokafka consumer, its
update_features and model per event) over K=1's topic; every events/s figure is also given as a ratio to it.
"cores" is what this machine gives the run (its CPU affinity): with 2 cores the total flattens at K=2, and the
per-actor figure at K=1 is the one that plans capacity (docs/capacity.md).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pipeline as bench  # bench/pipeline.py: the workload, its phases and figures
from rich.console import Console

from actors.messages import JobStatus
from configs import Settings
from connectors.broker import EmbeddedBroker
from models.checked_settings import load_settings
from tests.integration.raycluster import RayCluster


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4], help="the K to run, in order")
    parser.add_argument("--nodes", type=int, default=4, help="worker nodes of the Ray cluster (one CPU each)")
    parser.add_argument("--steady-rate", type=float, default=2_000.0)
    parser.add_argument("--steady-seconds", type=float, default=15.0)
    parser.add_argument("--steady-pace", choices=("live", "replay"), default="live",
                        help="phase 2's event time (bench/pipeline.py --steady-pace)")
    parser.add_argument("--history-days", type=int, default=30,
                        help="event time the backlog spans (bench/pipeline.py --history-days)")
    parser.add_argument("--alignment", choices=("both", "on", "off"), default="both",
                        help="stream.terminal_alignment for the runs: each K aligned (as configured: a backlog moves "
                             "one terminal bucket per round trip through the terminal stage) and unaligned (what the "
                             "actors' CPUs do when nothing waits: the capacity figure), or one of them")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="stream.checkpoint_interval_s (default: the config's)")
    args = parser.parse_args()
    if max(args.actors) > args.nodes:
        parser.error(f"--nodes ({args.nodes}) must be at least the largest K ({max(args.actors)}): one actor per node")
    if max(args.actors) > args.partitions:
        parser.error(f"--partitions ({args.partitions}) must be at least the largest K ({max(args.actors)})")
    return args


def _cores() -> int:
    """The CPUs this process may run on (the machine's, unless an affinity mask narrows them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _ray_cluster(nodes: int, console: Console) -> Iterator[RayCluster]:
    """A head without CPUs and ``nodes`` worker nodes of one CPU; stopped (nothing left running) at the end."""
    with bench.step(console, f"starting a Ray cluster: a head and {nodes} worker nodes"):
        cluster = RayCluster()
        try:
            cluster.start()
            for _ in range(nodes):
                cluster.add_node(num_cpus=1)
        except BaseException:
            cluster.stop()
            raise
    try:
        yield cluster
    finally:
        with bench.step(console, "stopping the Ray cluster"):
            cluster.stop()


def _settings(base: Settings, args: argparse.Namespace, workdir: Path, actors: int, aligned: bool,
              cluster: RayCluster) -> Settings:  # fmt: skip
    """bench/pipeline.py's settings on topics ``scaling-k<K>-<aligned|unaligned>.*``, the job a driver of the
    cluster, its actors spread over the nodes with one CPU each."""
    run_args = argparse.Namespace(**{**vars(args), "actors": actors})
    name = f"k{actors}-{'aligned' if aligned else 'unaligned'}"
    settings = bench.bench_settings(base, run_args, workdir / name, prefix=f"scaling-{name}")
    stream = msgspec.structs.replace(settings.stream, ray_address=cluster.address, placement="spread",
                                     actor_num_cpus=1.0, terminal_alignment=aligned)  # fmt: skip
    return msgspec.structs.replace(settings, stream=stream)


def _per_actor(status: JobStatus, cluster: RayCluster) -> list[dict[str, Any]]:
    """Each actor's phase-1 figures: its node, partitions, what they scored and its own events/s."""
    names = {node.node_id: node.name for node in cluster.nodes}
    actors = []
    for actor in status.actors:
        scored = sum(p.scored for p in actor.partitions.values())
        seconds = (actor.last_commit_wall or 0.0) - (actor.first_poll_wall or 0.0)
        actors.append({
            "actor": actor.actor,
            "node": names.get(actor.node_id or "", actor.node_id),
            "partitions": sorted(actor.partitions),
            "scored": scored,
            "events_per_s": round(scored / seconds) if seconds > 0 else None,
        })  # fmt: skip
    return actors


def _run_k(actors: int, aligned: bool, reference: bool, base: Settings, args: argparse.Namespace, workdir: Path,
           workload: bench.Workload, broker: EmbeddedBroker, cluster: RayCluster,
           console: Console) -> dict[str, Any]:  # fmt: skip
    """Both phases with K actors on their own topics; the figures (per actor and in total); ``reference``: the
    reference loop reads the same topic first."""
    settings = _settings(base, args, workdir, actors, aligned, cluster)
    embedded = bench.embedded_target(settings, broker.bootstrap_servers)
    target = bench.Target(f"K={actors} {'aligned' if aligned else 'unaligned'}", embedded.settings, embedded.bootstrap,
                          embedded.writer, embedded.prepare, references=("reference_loop",) if reference else ())
    run_args = argparse.Namespace(**{**vars(args), "actors": actors})
    measured = bench.run_workload(target, workload, run_args, console)
    figures = bench.run_figures(measured, run_args)
    per_actor = _per_actor(measured.caught_up, cluster)
    rates = [a["events_per_s"] for a in per_actor if a["events_per_s"]]
    return {
        "actors": actors,
        "terminal_alignment": aligned,
        "events_per_s": figures["events_per_s"],
        "per_actor_events_per_s": round(sum(rates) / len(rates)) if rates else None,
        "per_actor": per_actor,
        "nodes_used": len({a["node"] for a in per_actor}),
        "lost": figures["lost"],
        "p50_ms": figures["p50_ms"],
        "p95_ms": figures["p95_ms"],
        "p99_ms": figures["p99_ms"],
        "latency_samples": figures["latency_samples"],
        "reference_loop_per_s": figures.get("reference_loop_per_s"),
    }


def _summary(runs: list[dict[str, Any]], reference_per_s: float | None) -> dict[str, Any]:
    """Per alignment mode and K: speed-up and efficiency against the smallest K run, ratio to the reference loop."""
    summary: dict[str, Any] = {}
    for aligned in (True, False):
        mine = [run for run in runs if run["terminal_alignment"] is aligned]
        if not mine:
            continue
        first = mine[0]
        for run in mine:
            k = run["actors"]
            speedup = run["events_per_s"] / first["events_per_s"]
            ratio = None if not reference_per_s else round(run["events_per_s"] / reference_per_s, 3)
            summary[f"{'aligned' if aligned else 'unaligned'}_k{k}"] = {
                "speedup": round(speedup, 3), "efficiency": round(speedup * first["actors"] / k, 3),
                "ratio_to_reference_loop": ratio,
            }  # fmt: skip
    return summary


def main() -> None:
    args = _arguments()
    console = Console(stderr=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the Ray nodes and the broker on the way out
    base = load_settings()
    workload = bench.make_workload(base, args, console)
    workdir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-scaling-"))
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.alignment]
    runs = []
    with EmbeddedBroker() as broker, _ray_cluster(args.nodes, console) as cluster:
        for aligned in modes:
            for actors in args.actors:
                run = _run_k(actors, aligned, not runs, base, args, workdir, workload, broker, cluster, console)
                runs.append(run)
                console.log(f"K={actors} {'aligned' if aligned else 'unaligned'}: {run['events_per_s']:,} events/s "
                            f"in total, {run['per_actor_events_per_s']:,} per actor, p99 {run['p99_ms']} ms")
    reference = runs[0].pop("reference_loop_per_s")
    for run in runs[1:]:
        run.pop("reference_loop_per_s")
    print(json.dumps({
        "cores": _cores(),
        "ray_nodes": {"head_cpus": 0, "workers": args.nodes, "cpus_per_worker": 1},
        "partitions": args.partitions,
        "events": workload.transactions.num_rows,
        "history_days": args.history_days,
        "steady_rate": args.steady_rate,
        "reference_loop_per_s": reference,
        "runs": runs,
        "scaling": _summary(runs, reference),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
