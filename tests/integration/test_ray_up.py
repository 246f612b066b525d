"""`ray up` with the on-premises cluster config (Ray's `local` provider) against this machine over SSH, the
streaming job submitted to the cluster it started, alerts on the topic, `ray down`, and no Ray process left.

The host is this machine as a user of its own (``fsray``): sshd from Debian's openssh-server listens on
127.0.0.1:22 only, with a key generated for the test. The config is ray_cluster.local.yaml with only the hosts
and the login changed: the same file mounts, setup and start commands a user runs. The cluster's Ray lives in
that user's own temp dir (``RAY_TMPDIR`` in its ~/.bashrc, which Ray's SSH commands source), so its address
never lands in /tmp/ray/ray_current_cluster, where this suite's own ``ray.init()`` would look; and `ray stop`,
which the start commands and `ray down` run, can only stop that user's processes, never the suite's.

Needs root (to add the user and run sshd); `.ci/run` installs openssh-server and rsync. Without them the test
is skipped here, and fails in CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import yaml

from connectors.broker import free_port, port_answers
from contracts.records import decode_alert
from pipelines.jobs import ScoringJobs
from synthetic import generate
from tests.integration.streamkit import consume_all, job_config, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
USER = "fsray"
CLUSTER = "fraudstream-ray-up-test"
DASHBOARD = "http://127.0.0.1:8265"


def _require(ok: object, why: str) -> None:
    """Skip when the machine cannot host the test, except in CI, where the test must run."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run this test: .ci/run installs openssh-server and rsync)")
    pytest.skip(why)


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def _user_processes(user: str) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-u", user], check=False, capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if line.strip()]


def _prepare_user(key: Path) -> Path:
    """The SSH login the cluster config names: a user with the test key and Ray's temp dir in its home."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", USER)  # '*': no password, not locked
        entry = pwd.getpwnam(USER)
    home, uid, gid = Path(entry.pw_dir), entry.pw_uid, entry.pw_gid
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (ssh / "authorized_keys").chmod(0o600)
    (home / "tmp").mkdir(exist_ok=True)
    bashrc = home / ".bashrc"
    line = 'export RAY_TMPDIR="$HOME/tmp"  # this host\'s Ray keeps its sessions and address here\n'
    text = bashrc.read_text() if bashrc.exists() else ""
    if line not in text:
        # before Debian's "not interactive: return" guard would not matter (Ray runs `bash -i`), but first is safest
        bashrc.write_text(line + text)
    for path in (ssh, ssh / "authorized_keys", home / "tmp", bashrc):
        os.chown(path, uid, gid)
    return home


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sshd on 127.0.0.1:22 letting the test key in as USER; yields the private key."""
    _require(os.geteuid() == 0, "needs root: it adds the SSH user and runs sshd on port 22")
    for tool in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync", "useradd", "pgrep"):
        _require(shutil.which(tool), f"{tool} is not installed (apt-get install openssh-server rsync)")
    _require(not port_answers("127.0.0.1", 22), "something else already listens on 127.0.0.1:22")
    folder = tmp_path_factory.mktemp("sshd")
    key, host_key = folder / "id_ed25519", folder / "ssh_host_ed25519_key"
    for path in (key, host_key):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fraudstream ray up test", "-f", str(path))
    _prepare_user(key)
    config = folder / "sshd_config"
    config.write_text(
        "ListenAddress 127.0.0.1\nPort 22\n"
        f"HostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AllowUsers {USER}\nPermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nUsePAM no\nStrictModes yes\nMaxStartups 100\nMaxSessions 100\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = (folder / "sshd.log").open("w")
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not port_answers("127.0.0.1", 22):
            assert sshd.poll() is None, f"sshd exited: {(folder / 'sshd.log').read_text()}"
            assert time.monotonic() < deadline, "sshd did not listen on 127.0.0.1:22 in 20 s"
            time.sleep(0.2)
        yield key
    finally:
        sshd.terminate()
        sshd.wait(20)
        log.close()
        subprocess.run(["pkill", "-KILL", "-u", USER], check=False)  # whatever a failed test left running


def _cluster_config(folder: Path, key: Path) -> Path:
    """ray_cluster.local.yaml with this machine as the only host and the test login, and the head's job agent on a
    port of its own: the tests' in-process Ray (ray_session) holds Ray's default 52365 on this machine, and an agent
    that cannot bind it leaves the job server with no agent to submit to. Nothing else changed."""
    config = yaml.safe_load((ROOT / "ray_cluster.local.yaml").read_text())
    config["cluster_name"] = CLUSTER
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": USER, "ssh_private_key": str(key)}
    agent = f" --dashboard-agent-listen-port={free_port()}"
    config["head_start_ray_commands"] = [c + agent if "ray start --head" in c else c
                                         for c in config["head_start_ray_commands"]]  # fmt: skip
    path = folder / "ray_cluster.test.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _ray(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """The `ray` command of this environment, from the project folder (file mounts are relative to it)."""
    venv = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(venv / "ray"), *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)  # fmt: skip


def test_ray_up_runs_the_streaming_job_and_ray_down_leaves_nothing(
    ssh_host: Path, isolated_settings, kafka_broker: str, tmp_path: Path
) -> None:
    config = _cluster_config(tmp_path, ssh_host)
    shared = Path(tempfile.mkdtemp(prefix="fsray-job-"))  # readable by the cluster's user (tmp_path is not)
    try:
        up = _ray("up", "-y", "--no-config-cache", str(config), timeout_s=1500)
        assert up.returncode == 0, f"ray up failed:\n{up.stdout[-6000:]}\n{up.stderr[-4000:]}"
        assert any("raylet" in line for line in _user_processes(USER)), "ray up started no raylet"

        # the job reads its config by absolute path, as the cluster's user: a folder that user can read
        settings = isolated_settings(partitions=4)
        history = generate(msgspec.structs.replace(settings.generator, accounts=300, days=4, seed=5))
        report = produce(settings, kafka_broker, history.transactions, history.labels)
        shared.chmod(0o755)
        job_yaml = job_config(settings, kafka_broker, shared / "job.yaml", checkpoint_uri="checkpoints",
                              status_path="status.json", tracking_uri="sqlite:///mlruns/mlflow.db")  # fmt: skip
        job_yaml.chmod(0o644)

        jobs = ScoringJobs(DASHBOARD)
        job_id = jobs.submit(str(job_yaml), working_dir=ROOT, actors=2, drain_timeout_s=90)
        deadline = time.monotonic() + 300
        alerts = []
        while not alerts:
            state = jobs.status(job_id)
            assert state in {"PENDING", "RUNNING"}, f"job {state}:\n{jobs.logs(job_id)[-4000:]}"
            assert time.monotonic() < deadline, f"no alert in 300 s:\n{jobs.logs(job_id)[-4000:]}"
            records = asyncio.run(consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))
            alerts = [decode_alert(r.value) for r in records]
            time.sleep(2)
        assert all(a.transaction_id in set(history.transactions.column("transaction_id").to_pylist()) for a in alerts)
        assert report.transactions > 0
        assert jobs.stop(job_id, timeout_s=150) == "STOPPED"
        assert '"scored"' in jobs.logs(job_id)  # the job's status lines
    finally:
        down = _ray("down", "-y", str(config), timeout_s=300)
        shutil.rmtree(shared, ignore_errors=True)
    assert down.returncode == 0, f"ray down failed:\n{down.stdout[-4000:]}\n{down.stderr[-4000:]}"
    deadline = time.monotonic() + 30
    while (left := _user_processes(USER)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"ray down left processes of {USER}: {left}"
