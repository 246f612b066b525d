"""Typed configuration: the bundled file loads; every kind of mistake stops start-up with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from configs import ConfigError, Settings, load_settings
from configs.settings import SCENARIOS, settings_from_dict
from connectors.kafka import client_kwargs


def test_bundled_local_config_loads_with_embedded_defaults() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.kafka.embedded is True
    assert settings.kafka.security_protocol == "PLAINTEXT"
    topics = {t.name: t.partitions for t in settings.kafka.topics.all()}
    assert topics == {"transactions": 4, "labels": 4, "alerts": 4, "transactions.dlq": 1, "terminal.deltas": 4,
                      "terminal.risk": 4}
    assert set(settings.generator.scenario_weights) == set(SCENARIOS)
    assert (settings.generator.label_delay, settings.generator.label_delay_days) == ("mixed", 7.0)
    assert settings.mlflow.tracking_uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kafka": {"bootstrap": "x"}}, "kafka.bootstrap: unknown key (allowed: embedded, embedded_port, bootstrap_servers"),
        ({"kafak": {}}, "kafak: unknown key (allowed: kafka, producer, generator, features, mlflow, scoring, stream, history, training, evaluation, backtest, console)"),
        ({"kafka": {"topics": {"alerts": {"name": "a", "partitons": 3}}}}, "kafka.topics.alerts.partitons: unknown key"),
        ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol: Invalid enum value 'TLS' (allowed: 'PLAINTEXT', 'SSL', 'SASL_SSL')"),
        ({"kafka": {"embedded_port": "9092"}}, "kafka.embedded_port: Expected `int`, got `str`"),
        ({"kafka": {"embedded_port": 70000}}, "kafka.embedded_port: Expected `int` <= 65535"),
        ({"kafka": {"bootstrap_servers": ["kafka1"]}}, "kafka.bootstrap_servers[0]"),
        ({"generator": {"accounts": 0}}, "generator.accounts: Expected `int` >= 1"),
        ({"generator": {"fraud_rate": 0.5}}, "generator.fraud_rate: Expected `float` <= 0.2"),
        ({"generator": {"scenario_weights": {"phishing": 1}}}, "unknown scenario 'phishing'"),
        ({"generator": {"scenario_weights": {"bust_out": 0}}}, "at least one scenario"),
        ({"generator": {"label_delay": "weekly"}},
         "generator.label_delay: Invalid enum value 'weekly' (allowed: 'mixed', 'fixed', 'chargeback')"),
        ({"generator": {"label_delay_days": 0}}, "generator.label_delay_days: Expected `float` > 0.0"),
        ({"generator": {"label_delay_days": 400}}, "generator.label_delay_days: Expected `float` <= 365.0"),
        ({"kafka": {"topics": {"labels": {"name": "labels", "partitions": 2}}}}, "labels.partitions must equal"),
        ({"kafka": {"topics": {"alerts": {"name": "transactions"}}}}, "topic names must differ"),
        ({"kafka": {"embedded": True, "exactly_once": True}},
         "kafka.exactly_once: the embedded broker has no transactions; set exactly_once: false"),
        ({"kafka": {"topics": {"terminal_risk": {"name": "r", "configs": {"cleanup.policy": "compact"}}}}},
         "kafka.topics.terminal_risk.configs.cleanup.policy: compact is not possible, the job writes this topic's"),
        ({"kafka": {"topics": {"dead_letters": {"name": "d", "configs": {"cleanup.policy": "compact,delete"}}}}},
         "kafka.topics.dead_letters.configs.cleanup.policy: compact is not possible"),
        ({"kafka": {"topics": {"terminal_risk": {"name": "r", "configs": {"retention.ms": 604800000}}}}},
         "kafka.topics.terminal_risk.configs.retention.ms: 604800000 is shorter than the features' look-back "
         "(3283500000 ms"),
        ({"kafka": {"topics": {"alerts": {"name": "bad name!"}}}}, "kafka.topics.alerts.name"),
        ({"kafka": {"security_protocol": "SASL_SSL"}}, "sasl_mechanism and sasl_username are required"),
        ({"kafka": {"ssl_ca_file": "/nonexistent/ca.pem", "security_protocol": "SSL"}}, "kafka.ssl_ca_file: file '/nonexistent/ca.pem' does not exist"),
        ({"kafka": {"sasl_mechanism": "PLAIN", "sasl_username": "u"}}, "security_protocol is PLAINTEXT but TLS/SASL"),
        ({"kafka": {"sasl_password": "hunter2"}}, "kafka.sasl_password: secrets are not read from YAML"),
        ({"mlflow": {"token": "abc"}}, "mlflow.token: secrets are not read from YAML"),
        ({"producer": {"compression": "brotli"}}, "producer.compression: Invalid enum value 'brotli' (allowed: 'none', 'gzip'"),
        ({"producer": {"rate": -5}}, "producer.rate: Expected `float` >= 0.0"),
        ({"kafka": []}, "kafka: Expected `object`, got `array`"),
        ({"scoring": {"rules": [{"name": "a", "when": "amount > 1", "acton": "block"}]}},
         "scoring.rules[0].acton: unknown key (allowed: name, when, action, score)"),
        ({"scoring": {"rules": [{"name": "a", "when": "amount > 1", "action": "alert"}]}},
         "scoring.rules[0].action: Invalid enum value 'alert' (allowed: 'review', 'block')"),
        ({"stream": {"autoscale": {"min_actors": 3, "max_actors": 2}}},
         "stream.autoscale.min_actors: 3 is above max_actors (2); lower min_actors or raise max_actors"),
        ({"stream": {"autoscale": {"enabled": True, "min_actors": 5, "max_actors": 8}}},
         "stream.autoscale.min_actors: 5 is more than the 4 partitions of kafka.topics.transactions"),
        ({"stream": {"autoscale": {"scale_out_lag_s": 0}}}, "stream.autoscale.scale_out_lag_s: Expected `float` > 0.0"),
        ({"stream": {"autoscale": {"cooldown_s": -1}}}, "stream.autoscale.cooldown_s: Expected `float` >= 0.0"),
        ({"stream": {"autoscale": {"max_actor": 3}}}, "stream.autoscale.max_actor: unknown key (allowed: enabled, "
                                                      "min_actors, max_actors, scale_out_lag_s, scale_in_idle_s, cooldown_s)"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data)
    message = str(info.value)
    assert expected in message
    assert message.startswith("config error: ")
    assert "\n" not in message


def test_yaml_syntax_and_shape_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka:\n  embedded: [true\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- kafka\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(listing)
    with pytest.raises(ConfigError, match="not found; pass --config"):
        load_settings(tmp_path / "missing.yaml")


def test_overrides_are_validated_like_the_file() -> None:
    assert load_settings(overrides={"generator.accounts": 123}).generator.accounts == 123
    with pytest.raises(ConfigError, match=r"generator\.days"):
        load_settings(overrides={"generator.days": -1})


def test_sasl_password_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_self_signed_ca())
    settings = settings_from_dict(
        {
            "kafka": {
                "bootstrap_servers": ["kafka-1.example:9093", "kafka-2.example:9093"],
                "security_protocol": "SASL_SSL",
                "ssl_ca_file": str(ca),
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "fraudstream",
                "sasl_password_env": "TEST_FS_SASL",
            }
        }
    )
    monkeypatch.delenv("TEST_FS_SASL", raising=False)
    with pytest.raises(ConfigError, match="environment variable TEST_FS_SASL is not set"):
        client_kwargs(settings.kafka)
    monkeypatch.setenv("TEST_FS_SASL", "s3cret")
    kwargs = client_kwargs(settings.kafka)
    assert kwargs["bootstrap_servers"] == "kafka-1.example:9093,kafka-2.example:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "fraudstream"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["ssl_context"].check_hostname is True
    assert len(kwargs["ssl_context"].get_ca_certs()) == 1


def _self_signed_ca() -> str:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fraudstream test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_cli_stops_on_a_bad_config_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  security_protocol: TLS\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "broker", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "kafka.security_protocol" in lines[0] and "allowed: 'PLAINTEXT', 'SSL', 'SASL_SSL'" in lines[0]
    assert "Traceback" not in result.stderr
