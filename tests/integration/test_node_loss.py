"""The scoring job on a Ray cluster of several nodes (tests/integration/raycluster.py): scoring actors spread over
the nodes, a node lost mid-stream, and the node holding the controller lost.

A node is lost as a machine is: SIGKILL to its raylet, agents and the workers holding its actors. The job runs as
``python -m pipelines.stream`` with ``RAY_ADDRESS`` = the cluster's head, against the embedded broker, with
checkpoints on this machine's disk (every node sees them, as every node sees S3 in production). Each test
measures the recovery (kill -> every partition the lost actors owned scored past where it was at the kill) and
prints it; then every transaction must be scored, each partition's entity state (read from the final
checkpoints) must equal an uninterrupted run's, and a replayed alert must be the same alert.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import yaml

from actors.messages import ActorStatus, JobStatus
from connectors.kafka import cluster_id
from contracts.records import decode_alert
from models.checked_settings import load_settings
from synthetic import generate
from tests.integration.raycluster import ClusterJob, RayCluster, RayNode
from tests.integration.streamkit import consume_all, job_config, produce, reference_digests
from tests.kafka.jobkit import checkpointed_state, scored

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 3
ACTORS = 3
#: Offered by every worker node, not the head: the job's controller needs it, so it runs where a test can kill it
#: (the head holds the cluster: losing it is not survivable without GCS fault tolerance).
CONTROLLER_RESOURCE = "fraudstream-test-controller"
#: Kill -> scoring again, at most (Ray's node failure detection included: 3 missed health checks, 1 s apart).
RECOVERY_BOUND_S = 15.0


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head (no CPUs: no scoring actor there) and worker nodes of 2 CPUs each, added by the tests."""
    with RayCluster() as cluster:
        yield cluster


def _workers(cluster: RayCluster) -> list[RayNode]:
    """:data:`WORKERS` live worker nodes (a test before may have lost one), each offering the controller resource."""
    while len(cluster.workers) < WORKERS:
        cluster.add_node(num_cpus=2, resources={CONTROLLER_RESOURCE: 1})
    return cluster.workers


@pytest.fixture(scope="module")
def history(local_settings):
    spec = msgspec.structs.replace(local_settings.generator, accounts=300, days=4, seed=7, genuine_label_rate=0.2)
    return generate(spec)


def _config(settings, kafka_broker: str, tmp_path: Path) -> Path:
    """The job's config: the test's topics and checkpoints, 3 actors spread over the nodes, checkpoints every 0.5 s,
    the controller on a worker node."""
    path = job_config(settings, kafka_broker, tmp_path / "job.yaml", checkpoint_uri=str(tmp_path / "checkpoints"),
                      status_path=str(tmp_path / "status.json"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    raw = yaml.safe_load(path.read_text())
    raw["stream"].update(actors=ACTORS, actor_num_cpus=0.25, checkpoint_interval_s=0.5, placement="spread",
                         controller_resources={CONTROLLER_RESOURCE: 0.01})  # fmt: skip
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_settings(path)
    return path


def _all_running(status: JobStatus) -> bool:
    partitions = status.partitions.values()
    return (len(status.actors) == ACTORS and all(a.running and a.node_id for a in status.actors)
            and len(partitions) == 4 and all(p.lag is not None for p in partitions))  # fmt: skip


def _checkpointed(status: JobStatus) -> bool:
    return len(status.partitions) == 4 and all(p.checkpoint_seq > 0 for p in status.partitions.values())


@dataclass
class NodeLoss:
    """What losing a node mid-stream did."""

    victim: RayNode
    #: The last status before the kill, and the first with everything scored after it.
    before: JobStatus
    after: JobStatus
    #: The transactions partitions whose owners were lost (every one when the controller was).
    lost_partitions: list[int]
    #: Kill -> every lost partition owned by a new process on a surviving node and scored past where it was.
    recovery_s: float
    #: Kill -> the first status from a restarted controller (None: it was not lost), and -> every lost partition
    #: owned by a new process on a surviving node (restored, maybe not yet scoring).
    controller_back_s: float | None
    owned_again_s: float
    produced: int

    def timeline(self) -> str:
        controller = "" if self.controller_back_s is None else f"controller back {self.controller_back_s:.1f} s, "
        return (f"{self.victim.name} killed -> {controller}partitions {self.lost_partitions} owned again "
                f"{self.owned_again_s:.1f} s, scoring again {self.recovery_s:.1f} s ({self.produced} transactions)")


def _lose_node_mid_stream(cluster: RayCluster, job: ClusterJob, settings, kafka_broker: str, history,
                          victim_of: Callable[[JobStatus], RayNode], all_partitions_lost: bool) -> NodeLoss:  # fmt: skip
    """Score a third of the history and checkpoint it, stream the rest (and every label) at 800 transactions/s,
    kill the node ``victim_of`` picks a second in, measure the recovery, wait until everything is scored."""
    table = history.transactions
    first, rest = table.slice(0, table.num_rows // 3), table.slice(table.num_rows // 3)
    produce(settings, kafka_broker, first, None)
    job.wait_for(lambda s: scored(first.num_rows)(s) and _checkpointed(s), "the first third scored and checkpointed")
    producer = threading.Thread(target=produce, args=(settings, kafka_broker, rest, history.labels, 800.0))
    producer.start()
    time.sleep(1.0)
    before = job.status()
    assert before is not None and _all_running(before), before
    victim = victim_of(before)
    lost_actors = {a.actor for a in before.actors} if all_partitions_lost else \
        {a.actor for a in before.actors if a.node_id == victim.node_id}  # fmt: skip
    assert lost_actors, f"{victim.name} holds no scoring actor"
    old_pids = {a.actor: a.pid for a in before.actors}
    lost = sorted(int(p) for p, s in before.partitions.items() if s.actor in lost_actors)
    marks = {p: before.partitions[str(p)].next_offset for p in lost}
    killed = cluster.kill_node(victim)
    seen: dict[str, float] = {}

    def recovered(status: JobStatus) -> bool:
        if status.controller is not None and before.controller is not None and \
                status.controller.pid != before.controller.pid:  # fmt: skip
            seen.setdefault("controller", time.monotonic() - killed)
        owners = {a.actor: a for a in status.actors}
        scoring = True
        for partition in lost:
            state = status.partitions.get(str(partition))
            owner = owners.get(state.actor) if state is not None else None
            if state is None or owner is None or owner.pid == old_pids.get(owner.actor):
                return False
            if owner.node_id in (None, victim.node_id):
                return False
            scoring = scoring and state.next_offset > marks[partition]
        seen.setdefault("owned", time.monotonic() - killed)
        return scoring

    job.wait_for(recovered, "the lost partitions scored again", timeout_s=90)
    recovery_s = time.monotonic() - killed
    producer.join(120)
    assert not producer.is_alive()
    after = job.wait_for(scored(table.num_rows, labels_read=True), "every transaction scored", timeout_s=180)
    return NodeLoss(victim=victim, before=before, after=after, lost_partitions=lost, recovery_s=recovery_s,
                    controller_back_s=seen.get("controller"), owned_again_s=seen["owned"],
                    produced=table.num_rows)  # fmt: skip


def _owner_of_stage(status: JobStatus, stage: int) -> list[ActorStatus]:
    return [a for a in status.actors if str(stage) in a.stages]


def _check_nothing_lost(loss: NodeLoss, job: ClusterJob, config: Path, settings, kafka_broker: str) -> None:
    """Every offset scored, counters exactly once, stage partitions owned once on surviving nodes; after a drain,
    the checkpointed entity state equals an uninterrupted run's and every transaction has one alert id."""
    after = loss.after
    partitions = after.partitions.values()
    assert sum(p.next_offset for p in partitions) == loss.produced  # every offset scored at least once
    assert after.totals.scored == loss.produced  # counters restored with the checkpoints: exactly once
    victim = loss.victim.node_id
    for partition in loss.lost_partitions:  # restored from their checkpoints, on a surviving node
        state = after.partitions[str(partition)]
        assert state.restored_from is not None, (partition, state)
        assert next(a for a in after.actors if a.actor == state.actor).node_id != victim
    for stage in range(settings.kafka.topics.terminal_deltas.partitions):  # the terminal stage moved too
        owners = _owner_of_stage(after, stage)
        assert len(owners) == 1 and owners[0].node_id != victim, (stage, [o.actor for o in owners])
        before = _owner_of_stage(loss.before, stage)[0].stages[str(stage)].next_offset or 0
        assert (owners[0].stages[str(stage)].next_offset or 0) >= before, stage

    job.stop()  # drains: the final checkpoints hold every partition's state
    checkpoints = checkpointed_state(config, asyncio.run(cluster_id(settings.kafka, kafka_broker)))
    assert {p: c.digest for p, c in checkpoints.items()} == reference_digests(settings, kafka_broker)
    alerts = [decode_alert(r.value) for r in asyncio.run(
        consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))]  # fmt: skip
    assert alerts
    ids: dict[str, set[str]] = {}
    for alert in alerts:
        ids.setdefault(alert.transaction_id, set()).add(alert.alert_id)
    assert all(len(found) == 1 for found in ids.values())  # a replayed alert is the same alert


def test_actors_spread_over_nodes_and_a_lost_node_moves_its_partitions(
    ray_cluster: RayCluster, stream_settings, kafka_broker: str, history, tmp_path: Path
) -> None:
    workers = _workers(ray_cluster)
    settings = stream_settings()
    config = _config(settings, kafka_broker, tmp_path)
    with ClusterJob(ray_cluster, config, tmp_path / "job.log") as job:
        status = job.wait_for(_all_running, f"{ACTORS} actors running", timeout_s=120)
        # spread: one scoring actor per worker node, none on the head (it has no CPUs)
        nodes = [ray_cluster.node_by_id(a.node_id) for a in status.actors]
        assert len({node.name for node in nodes if node is not None}) == ACTORS, [a.node_id for a in status.actors]
        assert all(node in workers for node in nodes)
        for actor, node in zip(status.actors, nodes, strict=True):  # the processes the status names, on those nodes
            assert node is not None and actor.pid in node.actor_pids("ScoringActor"), (actor.actor, node.name)
        assert status.controller is not None
        controller = status.controller

        def a_scoring_node_without_the_controller(before: JobStatus) -> RayNode:
            node = next(ray_cluster.node_by_id(a.node_id) for a in before.actors if a.node_id != controller.node_id)
            assert node is not None
            return node

        loss = _lose_node_mid_stream(ray_cluster, job, settings, kafka_broker, history,
                                     a_scoring_node_without_the_controller, all_partitions_lost=False)  # fmt: skip
        print(f"\nnode loss: {loss.timeline()}")
        assert loss.recovery_s <= RECOVERY_BOUND_S, loss.recovery_s
        after = loss.after
        assert after.controller is not None and after.controller.pid == controller.pid  # the controller went on
        assert {a.actor for a in after.actors} == {a.actor for a in loss.before.actors}
        assert any(e.event == "actor_restarted" for e in after.events), after.events
        _check_nothing_lost(loss, job, config, settings, kafka_broker)


def test_losing_the_controllers_node_replaces_its_actors_under_their_names(
    ray_cluster: RayCluster, stream_settings, kafka_broker: str, history, tmp_path: Path
) -> None:
    _workers(ray_cluster)
    settings = stream_settings()
    config = _config(settings, kafka_broker, tmp_path)
    with ClusterJob(ray_cluster, config, tmp_path / "job.log") as job:
        status = job.wait_for(_all_running, f"{ACTORS} actors running", timeout_s=120)
        assert status.controller is not None
        controller = status.controller
        node = ray_cluster.node_by_id(controller.node_id)
        assert node is not None and not node.head and controller.pid in node.actor_pids("Controller")

        loss = _lose_node_mid_stream(ray_cluster, job, settings, kafka_broker, history, lambda _: node,
                                     all_partitions_lost=True)  # fmt: skip
        print(f"\ncontroller's node lost: {loss.timeline()}")
        assert loss.recovery_s <= RECOVERY_BOUND_S, loss.recovery_s
        after = loss.after
        # Ray restarted the controller on another node; it replaced every scoring actor under its name
        assert after.controller is not None and after.controller.restarts == 1, after.controller
        assert after.controller.node_id != node.node_id and after.controller.pid != controller.pid
        restarted = [e.detail for e in after.events if e.event == "controller_restarted"]
        assert restarted, after.events
        print(f"controller: {restarted[0]}")
        assert [a.actor for a in after.actors] == [a.actor for a in loss.before.actors]
        assert after.plan == loss.before.plan and after.stage_plan == loss.before.stage_plan
        assert all(a.restarts == 1 for a in after.actors), [(a.actor, a.restarts) for a in after.actors]
        assert all(a.node_id != node.node_id for a in after.actors)
        _check_nothing_lost(loss, job, config, settings, kafka_broker)
