"""The cluster-launcher configs pass Ray's own checks and cannot drift apart.

``ray_cluster.yaml`` (AWS) and ``ray_cluster.local.yaml`` (Ray's ``local`` provider: your own hosts over
SSH) are checked the way ``ray up`` checks a file before it touches a node: Ray's JSON schema
(``ray/autoscaler/ray-schema.json``) on the file as written, then ``prepare_config`` (provider defaults
merged; for the local provider, the host list turned into a node type) and ``validate_config``. The two
files must share their file mounts, rsync excludes, setup and start commands, and the start commands must
put the project's virtual environment first on PATH. No network, no SSH: nothing is launched.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from pipelines.jobs import UPLOAD_EXCLUDES

ROOT = Path(__file__).resolve().parents[1]
FILES = {"aws": ROOT / "ray_cluster.yaml", "local": ROOT / "ray_cluster.local.yaml"}

#: What both files must hold identically (the project, its environment, how Ray starts on a node).
SHARED = ("file_mounts", "rsync_exclude", "initialization_commands", "setup_commands", "head_setup_commands",
          "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
#: Where the setup commands put the project and its virtual environment on every node.
PROJECT = "~/fraudstream"
VENV = "~/fraudstream-venv"
ON_PATH = f"export PATH={VENV}/bin:$PATH && "


def _load(name: str) -> dict[str, Any]:
    config = yaml.safe_load(FILES[name].read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def _schema() -> dict[str, Any]:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's schema on the file as written, then what ``ray up`` validates: the prepared config (returned)."""
    jsonschema.validate(config, _schema())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(FILES))
def test_ray_accepts_the_cluster_config(name: str) -> None:
    prepared = ray_up_checks(_load(name))  # raises when Ray refuses the file
    assert prepared["provider"]["type"] in {"aws", "local"}
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _misspell_top_level(config: dict[str, Any]) -> None:
    config["setup_comands"] = config.pop("setup_commands")


def _misspell_auth(config: dict[str, Any]) -> None:
    config["auth"]["ssh_usr"] = config["auth"].pop("ssh_user")


def _command_not_a_list(config: dict[str, Any]) -> None:
    config["head_start_ray_commands"] = " && ".join(config["head_start_ray_commands"])


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("breaks", [_misspell_top_level, _misspell_auth, _command_not_a_list])
def test_a_broken_copy_is_refused(name: str, breaks: Any) -> None:
    broken = _load(name)
    breaks(broken)
    with pytest.raises(jsonschema.ValidationError):
        ray_up_checks(broken)


@pytest.mark.parametrize("name", sorted(FILES))
def test_rays_own_validation_refuses_a_misspelled_top_level_key(name: str) -> None:
    broken = _load(name)
    _misspell_top_level(broken)
    prepared = prepare_config(broken)  # what `ray up` validates (no schema check of ours before it)
    with pytest.raises(jsonschema.ValidationError, match="'setup_comands' was unexpected"):
        validate_config(prepared)


@pytest.mark.parametrize("key", SHARED)
def test_aws_and_local_share_mounts_and_commands(key: str) -> None:
    aws, local = _load("aws"), _load("local")
    assert key in aws and key in local
    assert aws[key] == local[key], f"{key} differs between ray_cluster.yaml and ray_cluster.local.yaml"


@pytest.mark.parametrize("name", sorted(FILES))
def test_the_project_is_installed_into_its_venv_and_the_start_commands_put_it_first_on_path(name: str) -> None:
    config = _load(name)
    assert config["file_mounts"] == {PROJECT: "."}
    setup = config["setup_commands"]
    assert setup[0].startswith(f"python3.11 -m venv {VENV}")
    assert f"{VENV}/bin/pip install --quiet -e {PROJECT}" in setup
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    for command in head + workers:
        assert command.startswith(ON_PATH), command
    assert any("ray start --head" in command for command in head)
    assert any("ray start --address=$RAY_HEAD_IP:6379" in command for command in workers)


@pytest.mark.parametrize("name", sorted(FILES))
def test_nodes_get_no_more_than_a_job_upload(name: str) -> None:
    missing = [pattern for pattern in UPLOAD_EXCLUDES if pattern not in _load(name)["rsync_exclude"]]
    assert missing == [], "rsync_exclude should leave out what `ray job submit` leaves out (pipelines/jobs.py)"


def test_the_local_variant_lists_hosts_reached_over_ssh() -> None:
    config = _load("local")
    provider, auth = config["provider"], config["auth"]
    assert provider["type"] == "local"
    assert isinstance(provider["head_ip"], str) and provider["head_ip"]
    assert isinstance(provider["worker_ips"], list) and all(isinstance(ip, str) for ip in provider["worker_ips"])
    assert auth["ssh_user"] and auth["ssh_private_key"]
    # Ray's local provider makes its own node type from the hosts; it refuses files that define some
    assert "available_node_types" not in config and "head_node_type" not in config
    assert config["cluster_name"] != _load("aws")["cluster_name"]
    prepared = prepare_config(copy.deepcopy(config))
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])


def test_the_local_variant_marks_every_value_to_change() -> None:
    lines = FILES["local"].read_text(encoding="utf-8").splitlines()
    for key in ("head_ip:", "worker_ips:", "ssh_user:", "ssh_private_key:"):
        (at,) = [i for i, line in enumerate(lines) if line.strip().startswith(key)]
        assert "CHANGE ME" in lines[at] or "CHANGE ME" in lines[at - 1], key


@pytest.mark.parametrize("name", sorted(FILES))
def test_setup_puts_the_venv_on_the_login_path_once(name: str, tmp_path: Path) -> None:
    """`ray down` runs a plain `ray stop` through `bash -i` (and `ray exec` any command): `ray` must be on the
    login PATH, or Ray keeps running on every on-premises node after `ray down`."""
    import subprocess

    command = _load(name)["setup_commands"][-1]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # setup runs again on every `ray up`: the line is added once
        subprocess.run(["bash", "-c", command], env=env, check=True)
    assert (tmp_path / ".bashrc").read_text().count("fraudstream-venv") == 1
    path = subprocess.run(["bash", "-c", "source ~/.bashrc; echo $PATH"], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    assert path.split(":")[0] == f"{tmp_path}/fraudstream-venv/bin"
