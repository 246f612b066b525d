"""The bundled config files: both load, cluster.yaml has the production shape, every setting is documented.

``configs/local.yaml`` holds the embedded defaults (one machine), ``configs/cluster.yaml`` the production
settings (real Kafka over TLS with SASL, S3 checkpoints, an MLflow tracking server). The keys every file must
list are walked from the msgspec Struct types of ``configs/settings.py``, so a setting added there without
documenting it in both files fails here. No network: nothing connects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

from configs import ConfigError, EvaluationSettings, Settings
from models.checked_settings import load_settings  # what a program loads: the rules file compiled too

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LOCAL = CONFIGS / "local.yaml"
CLUSTER = CONFIGS / "cluster.yaml"
FILES = {"local.yaml": LOCAL, "cluster.yaml": CLUSTER}

#: Production values a user must set: the key's line, or the comment lines just above it, say CHANGE ME.
CHANGE_ME = ("kafka.bootstrap_servers", "kafka.ssl_ca_file", "kafka.sasl_username", "mlflow.tracking_uri",
             "stream.checkpoint_uri")  # fmt: skip


# --- the keys the settings define --------------------------------------------------------------------------


def setting_keys(root: type[msgspec.Struct] = Settings) -> set[str]:
    """Every key below ``root`` as a dotted path, walked from the Struct types (items of a list of structs: ``[]``).

    >>> sorted(setting_keys(EvaluationSettings))
    ['top_k']
    >>> {"kafka.topics.labels.partitions", "scoring.rules[].when"} <= setting_keys()
    True
    """
    keys: set[str] = set()

    def fields(info: mi.StructType, prefix: str) -> None:
        for field in info.fields:
            path = prefix + field.encode_name
            keys.add(path)
            below(field.type, path)

    def below(tp: mi.Type, path: str) -> None:
        if isinstance(tp, mi.Metadata):
            below(tp.type, path)
        elif isinstance(tp, mi.StructType):
            fields(tp, path + ".")
        elif isinstance(tp, mi.CollectionType):  # list, tuple[X, ...], set: the items' keys
            below(tp.item_type, path + "[]")
        elif isinstance(tp, mi.UnionType):  # X | None
            for option in tp.types:
                below(option, path)

    info = mi.type_info(root)
    assert isinstance(info, mi.StructType)
    fields(info, "")
    return keys


# --- the keys a file documents -----------------------------------------------------------------------------

#: A comment line that is commented-out YAML, ``# key: value`` (a key the file shows without setting it).
_COMMENTED_KEY = re.compile(r"^(?P<indent>\s*)#\s*(?P<body>[A-Za-z_][A-Za-z0-9_]*:(?:\s.*)?)$")
_COMMENT = re.compile(r"(?:^|\s)#")


@dataclass(frozen=True)
class DocumentedKey:
    path: str
    first: int  # 0-based line of the key
    last: int  # last line of its value when that is a scalar or a flow collection (else the key's line)
    commented: bool  # shown in a comment (``# rules: [...]``) rather than set


def documented_keys(text: str) -> dict[str, DocumentedKey]:
    """The keys ``text`` sets, and the keys it shows commented out (placed in their section by indentation)."""
    found: dict[str, DocumentedKey] = {}
    sections: list[tuple[int, int, str]] = []  # (line, column, path) of the keys whose value is a block mapping

    def walk(node: yaml.Node, prefix: str, line_offset: int, commented: bool) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = prefix + str(key.value)
                line = key.start_mark.line + line_offset
                block = isinstance(value, yaml.CollectionNode) and not value.flow_style
                last = line if block else value.end_mark.line + line_offset
                found.setdefault(path, DocumentedKey(path, line, last, commented))
                if block and isinstance(value, yaml.MappingNode) and not commented:
                    sections.append((line, key.start_mark.column, path))
                walk(value, path + ".", line_offset, commented)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, prefix.removesuffix(".") + "[].", line_offset, commented)

    root = yaml.compose(text)
    if root is not None:
        walk(root, "", 0, commented=False)
    for number, line in enumerate(text.splitlines()):
        match = _COMMENTED_KEY.match(line)
        if match is None:
            continue
        try:
            node = yaml.compose(match["body"])
        except yaml.YAMLError:
            continue  # prose that happens to start like a key
        if not isinstance(node, yaml.MappingNode):
            continue
        column = len(match["indent"])
        parent = next((path for at, col, path in reversed(sections) if at < number and col < column), None)
        walk(node, f"{parent}." if parent else "", number, commented=True)
    return found


def undocumented(text: str, keys: set[str]) -> list[str]:
    """The keys of ``keys`` that ``text`` neither sets nor shows in a comment."""
    return sorted(keys - set(documented_keys(text)))


def uncommented(text: str, keys: set[str]) -> list[str]:
    """The keys of ``keys`` whose lines (or the line just before) carry no comment saying what they are."""
    lines = text.splitlines()
    missing = []
    for key in documented_keys(text).values():
        if key.path not in keys:
            continue
        own = lines[key.first : key.last + 1]
        if key.commented:  # the line is commented-out YAML: the explanation is a second comment, or above it
            own = [line.split("#", 1)[1] for line in own]
        before = lines[key.first - 1].strip() if key.first > 0 else ""
        if not any(_COMMENT.search(line) for line in own) and not before.startswith("#"):
            missing.append(key.path)
    return sorted(missing)


# --- both files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_setting_appears_in_the_file(name: str) -> None:
    assert undocumented(FILES[name].read_text(encoding="utf-8"), setting_keys()) == []


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_key_carries_a_comment_on_its_line_or_the_line_before(name: str) -> None:
    assert uncommented(FILES[name].read_text(encoding="utf-8"), setting_keys()) == []


def test_the_walk_catches_a_setting_added_without_documenting_it() -> None:
    class Extended(Settings):
        fresh_section: EvaluationSettings = EvaluationSettings()

    text = CLUSTER.read_text(encoding="utf-8")
    assert undocumented(text, setting_keys(Extended)) == ["fresh_section", "fresh_section.top_k"]

    without = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("checkpoint_keep:"))
    assert undocumented(without, setting_keys()) == ["stream.checkpoint_keep"]

    bare = re.sub(r"(?m)^(  checkpoint_keep: \d+)\s+#.*$", r"\1", text)
    assert bare != text
    assert uncommented(bare, setting_keys()) == ["stream.checkpoint_keep"]


def test_commented_out_keys_are_placed_in_their_section_by_indentation() -> None:
    text = (
        "kafka:\n"
        "  topics:\n"
        "    alerts: {name: alerts}   # alerts\n"
        "  # sasl_username: me       # a commented-out key of kafka, not of kafka.topics\n"
        "scoring:\n"
        "  rules_file: rules.yaml\n"
        "  # Inline rules, e.g.\n"
        "  # rules: [{name: a, when: 'amount > 1'}]\n"
        "# Note that prose: is not a key\n"
    )
    keys = documented_keys(text)
    assert {"kafka.sasl_username", "scoring.rules", "scoring.rules[].name", "scoring.rules[].when"} <= set(keys)
    assert keys["kafka.topics.alerts.name"].commented is False and keys["scoring.rules"].commented is True
    assert not any(path.startswith(("kafka.topics.sasl", "Note")) for path in keys)
    assert uncommented(text, {"kafka.topics.alerts.name", "scoring.rules", "scoring.rules_file"}) == [
        "scoring.rules_file"
    ]


# --- configs/local.yaml ------------------------------------------------------------------------------------


def test_local_yaml_loads_as_the_default_config() -> None:
    settings = load_settings(LOCAL)
    assert settings == load_settings()
    assert settings.kafka.embedded is True and settings.kafka.security_protocol == "PLAINTEXT"


# --- configs/cluster.yaml ----------------------------------------------------------------------------------


def _load_cluster(tmp_path: Path) -> Settings:
    """cluster.yaml as a cluster node loads it, with its CA file at a path that exists on this machine.

    ``kafka.ssl_ca_file`` must exist where the config is loaded (settings.py checks it then; every actor
    reads it when connecting), so the test points it at a file of its own, the one value overridden.
    """
    ca = tmp_path / "kafka-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n(checked for existence only: nothing connects)\n")
    return load_settings(CLUSTER, overrides={"kafka.ssl_ca_file": str(ca)})


def test_cluster_yaml_checks_its_ca_file_at_load_time() -> None:
    configured = yaml.safe_load(CLUSTER.read_text(encoding="utf-8"))["kafka"]["ssl_ca_file"]
    assert Path(configured).is_absolute(), "the CA bundle must be at the same absolute path on every node"
    if Path(configured).is_file():
        pytest.skip(f"{configured} exists on this machine")
    with pytest.raises(ConfigError, match=f"ssl_ca_file: file '{re.escape(configured)}' does not exist"):
        load_settings(CLUSTER)


def test_cluster_yaml_is_the_production_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load_cluster(tmp_path)

    kafka = settings.kafka
    assert kafka.embedded is False
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
    assert kafka.sasl_username and kafka.ssl_check_hostname
    assert kafka.bootstrap_servers and not any(s.startswith(("127.", "localhost:")) for s in kafka.bootstrap_servers)
    topics = kafka.topics
    assert all(t.replication_factor >= 3 for t in topics.all())
    # actor k owns partitions p mod K == k: every actor gets the same share of the keyed topics
    for topic in (topics.transactions, topics.terminal_deltas):
        assert topic.partitions % settings.stream.actors == 0, topic

    # the password is read from the environment when connecting, never from the file
    monkeypatch.delenv(kafka.sasl_password_env, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {kafka.sasl_password_env} is not set"):
        kafka.sasl_password()
    monkeypatch.setenv(kafka.sasl_password_env, "from-the-environment")
    assert kafka.sasl_password() == "from-the-environment"

    checkpoints = urlparse(settings.stream.checkpoint_uri)
    assert checkpoints.scheme == "s3" and checkpoints.netloc and checkpoints.path.strip("/")

    tracking = urlparse(settings.mlflow.tracking_uri)
    assert tracking.scheme in ("https", "http") and tracking.netloc
    assert settings.mlflow.token_env

    local = load_settings(LOCAL)
    assert settings.stream.ray_address == ""  # `ray job submit` sets RAY_ADDRESS
    assert settings.stream.actors > local.stream.actors
    assert topics.transactions.partitions > local.kafka.topics.transactions.partitions
    assert Path(settings.stream.status_path).is_absolute()  # a job's working directory is a temporary copy
    # relative paths resolve against the config file's folder: the same rules file as local.yaml
    assert settings.scoring.rules_file == str((CONFIGS / "rules.yaml").resolve()) == local.scoring.rules_file
    # features must be the ones the served models were trained with (locally, with local.yaml)
    assert settings.features == local.features


def test_cluster_yaml_marks_the_values_to_change() -> None:
    text = CLUSTER.read_text(encoding="utf-8")
    lines = text.splitlines()
    keys = documented_keys(text)
    for path in CHANGE_ME:
        start = keys[path].first
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        assert "CHANGE ME" in "\n".join(lines[start : keys[path].last + 1]), path
