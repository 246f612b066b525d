"""MLflow adapter: the tracking store, training runs, registered versions, aliases and the promotion gate.

The only module that imports MLflow. Models are registered by ``fraudstream
train`` as versions of ``training.registered_model`` with two version tags that
serving checks before it scores anything: ``feature_version`` (the feature
registry version the model was trained on) and ``feature_names`` (its input
columns, comma-separated). Aliases (``champion``, ``challenger``) name the
versions in use; ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` load them.

The default store is SQLite in a local folder (``mlflow.tracking_uri:
sqlite:///mlruns/mlflow.db``); artifacts then go to ``artifacts/`` beside the
database. Open the UI on it with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from configs import ConfigError, MlflowSettings, StackingSettings
from models.batch import TRUSTED_TYPES, BatchModel

#: The run metric the promotion gate compares.
GATE_METRIC = "test_ap"
#: Model-version tag holding the fusion learned with the version (JSON of ``scoring.fusion.stacking``).
FUSION_TAG = "fusion"
ALIASES = ("champion", "challenger")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


class RegistryError(ConfigError):
    """The registry cannot do what was asked; one line naming what and the fix."""


class MissingModel(RegistryError):
    """The registered model, the alias or the version does not exist (yet)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version as the CLI reports it."""

    name: str
    version: str
    run_id: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///"))
    return None


def store_exists(settings: MlflowSettings) -> bool:
    """False only for a SQLite store whose file was never created (nothing was ever logged)."""
    path = _sqlite_path(settings.tracking_uri)
    return path is None or path.is_file()


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic INFO lines (database creation, "registered model") stay out of the CLI's output."""
    import mlflow  # noqa: F401  (configures its loggers on import; set their levels after that)

    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def connect(settings: MlflowSettings) -> Any:
    """An ``MlflowClient`` on the configured store (the SQLite folder is created when needed)."""
    token = os.environ.get(settings.token_env)
    if token and settings.token_env != "MLFLOW_TRACKING_TOKEN":
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    path = _sqlite_path(settings.tracking_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(settings.tracking_uri)
        try:
            client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
            client.search_experiments(max_results=1)  # opens (and on first use creates) the store
        except Exception as exc:
            raise RegistryError(
                f"mlflow.tracking_uri: cannot open {settings.tracking_uri} ({_first_line(exc)}); "
                "fix the URI or start the tracking server"
            ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def experiment_id(client: Any, settings: MlflowSettings, name: str) -> str:
    """The experiment's id, created on first use (artifacts beside a SQLite store)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    path = _sqlite_path(settings.tracking_uri)
    location = (path.parent / "artifacts").resolve().as_uri() if path is not None else None
    return str(client.create_experiment(name, artifact_location=location))


def log_training(
    client: Any,
    settings: MlflowSettings,
    *,
    experiment: str,
    registered_model: str,
    model: Any,
    feature_names: tuple[str, ...],
    feature_version: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | None],
    input_example: Any,
    artifacts: tuple[Path, ...] = (),
    fusion: StackingSettings | None = None,
) -> RegisteredVersion:
    """Log one training run (params, metrics, artifacts, the model) and register it as a new version (with the
    learned ``fusion`` in its ``fusion`` tag, when there is one)."""
    with _quiet():
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        run_experiment = experiment_id(client, settings, experiment)
        with mlflow.start_run(experiment_id=run_experiment):
            mlflow.log_params({key: _param(value) for key, value in params.items()})
            mlflow.log_metrics({key: float(value) for key, value in metrics.items() if value is not None})
            mlflow.set_tags({"feature_version": feature_version, "fraudstream.command": "train"})
            for artifact in artifacts:
                mlflow.log_artifact(str(artifact))
            signature = infer_signature(input_example, model.predict_proba(input_example))
            options: dict[str, Any] = {
                "signature": signature,
                "input_example": input_example,
                "registered_model_name": registered_model,
                "pip_requirements": _requirements(),
            }
            if "skops_trusted_types" in inspect.signature(mlflow.sklearn.log_model).parameters:
                options["skops_trusted_types"] = list(TRUSTED_TYPES)  # our own scikit-learn classes, saved by us
            info = mlflow.sklearn.log_model(model, name="model", **options)
        version = str(info.registered_model_version)
        tags = {"feature_version": feature_version, "feature_names": ",".join(feature_names)}
        if fusion is not None:
            tags[FUSION_TAG] = msgspec.json.encode(fusion).decode()
        if metrics.get(GATE_METRIC) is not None:
            tags[GATE_METRIC] = f"{metrics[GATE_METRIC]:.6f}"
        for key, value in tags.items():
            client.set_model_version_tag(registered_model, version, key, value)
        return _version(client, client.get_model_version(registered_model, version))


def log_online_snapshot(
    client: Any,
    settings: MlflowSettings,
    *,
    experiment: str,
    registered_model: str,
    snapshots: Mapping[int, bytes],
    online_version: str,
    feature_version: str,
    metrics: Mapping[str, float],
) -> RegisteredVersion:
    """Log the online classifiers of a running job (one snapshot per Kafka partition) as one run and register
    it as a new version of ``registered_model`` (``fraud-online``); read a partition back with
    ``models.online.OnlineClassifierSource.from_snapshot`` on ``snapshots/partition-<p>.bin``."""
    import json
    import tempfile

    with _quiet():
        import mlflow

        run_experiment = experiment_id(client, settings, experiment)
        with tempfile.TemporaryDirectory(prefix="fraudstream-online-") as folder:
            root = Path(folder) / "snapshots"
            root.mkdir()
            for partition, data in sorted(snapshots.items()):
                (root / f"partition-{partition}.bin").write_bytes(data)
            (root / "snapshot.json").write_text(json.dumps(
                {"online_version": online_version, "feature_version": feature_version,
                 "partitions": sorted(snapshots)}, indent=1))
            with mlflow.start_run(experiment_id=run_experiment) as run:
                mlflow.set_tags({"feature_version": feature_version, "online_version": online_version,
                                 "fraudstream.command": "stream"})
                mlflow.log_params({"partitions": len(snapshots), "online_version": online_version})
                mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
                mlflow.log_artifacts(str(root), artifact_path="snapshots")
                source = f"{run.info.artifact_uri}/snapshots"
        try:
            client.get_registered_model(registered_model)
        except Exception as exc:
            if not _not_found(exc):
                raise
            client.create_registered_model(registered_model)
        created = client.create_model_version(
            registered_model, source, run_id=run.info.run_id,
            tags={"feature_version": feature_version, "online_version": online_version},
        )
        return _version(client, created)


def _param(value: Any) -> str:
    text = str(list(value)) if isinstance(value, tuple) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("scikit-learn", "pandas", "numpy", "skops"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def _version(client: Any, model_version: Any) -> RegisteredVersion:
    metrics: dict[str, float] = {}
    if model_version.run_id:
        try:
            metrics = dict(client.get_run(model_version.run_id).data.metrics)
        except Exception:
            metrics = {}
    return RegisteredVersion(
        name=model_version.name,
        version=str(model_version.version),
        run_id=model_version.run_id or "",
        metrics=metrics,
        tags=dict(model_version.tags or {}),
    )


def _not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return "RESOURCE_DOES_NOT_EXIST" in str(code) or "not found" in str(exc).lower()


def _latest(client: Any, name: str, option: str) -> Any:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception as exc:
        raise RegistryError(f"{option}: cannot list versions of {name!r} ({_first_line(exc)})") from None
    if not versions:
        raise MissingModel(f"{option}: no registered model {name!r} yet; train one with `fraudstream train`")
    return max(versions, key=lambda v: int(v.version))


def _parsed(uri: str, option: str) -> re.Match[str]:
    match = _URI.match(uri)
    if match is None:
        raise RegistryError(
            f"{option}: {uri!r} is not a model URI; use models:/NAME@ALIAS (e.g. models:/fraud-classifier@champion) "
            "or models:/NAME/VERSION"
        )
    return match


def model_name(uri: str, option: str = "--model") -> str:
    """The registered model a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names (no registry call).

    >>> model_name("models:/fraud-classifier@champion"), model_name("models:/fraud-classifier/3")
    ('fraud-classifier', 'fraud-classifier')
    """
    return _parsed(uri, option).group("name")


def resolve(client: Any, uri: str, option: str = "--model") -> RegisteredVersion:
    """The version a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names; MissingModel when absent."""
    match = _parsed(uri, option)
    name, alias, number = match.group("name"), match.group("alias"), match.group("version")
    with _quiet():
        _latest(client, name, option)  # the registered model exists
        try:
            found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        except Exception as exc:
            if not _not_found(exc):
                raise RegistryError(f"{option}: cannot resolve {uri} ({_first_line(exc)})") from None
            if alias:
                raise MissingModel(
                    f"{option}: model {name!r} has no version with alias {alias!r}; set it with "
                    f"`fraudstream promote --version N --alias {alias}`"
                ) from None
            raise MissingModel(f"{option}: model {name!r} has no version {number}") from None
        return _version(client, found)


@contextmanager
def _stores_of(client: Any) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to ``client``'s for the block (``load_model`` of a
    ``models:/`` URI reads those, not the client's), then put back exactly as they were: unset stays unset, so
    a later ``MlflowClient(uri)`` still defaults its registry to its own store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    variables = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # the setters export them for subprocesses
    saved = (tracking_state._tracking_uri, registry_state._registry_uri, {v: os.environ.get(v) for v in variables})
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(getattr(client, "_registry_uri", None) or client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None: back to unset, as before
        registry_state._registry_uri = saved[1]
        for name, value in saved[2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_batch_model(client: Any, uri: str, option: str = "--model") -> BatchModel:
    """The classifier a model URI names, with the feature layout its version tags record."""
    version = resolve(client, uri, option)
    feature_version = version.tags.get("feature_version")
    names = tuple(n for n in version.tags.get("feature_names", "").split(",") if n)
    if not feature_version or not names:
        raise RegistryError(
            f"{option}: {uri} (version {version.version}) has no feature_version/feature_names tags; "
            "register classifiers with `fraudstream train`"
        )
    with _quiet(), _stores_of(client):
        import mlflow.sklearn

        try:
            model = mlflow.sklearn.load_model(version.uri)
        except Exception as exc:
            raise RegistryError(f"{option}: cannot load {uri} (version {version.version}): {_first_line(exc)}") from None
    return BatchModel(model, names, feature_version, f"{version.name}/{version.version}",
                      _fusion_tag(version, uri, option))  # fmt: skip


def _fusion_tag(version: RegisteredVersion, uri: str, option: str) -> StackingSettings | None:
    """The fusion registered with ``version`` (its ``fusion`` tag), None for a version registered without one."""
    text = version.tags.get(FUSION_TAG)
    if not text:
        return None
    try:
        return msgspec.json.decode(text, type=StackingSettings)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise RegistryError(
            f"{option}: {uri} (version {version.version}) has a malformed {FUSION_TAG!r} tag ({exc}); register it "
            "again with `fraudstream train`, or delete the tag to fuse with max"
        ) from None


def promote(client: Any, name: str, version: str | None, alias: str, force: bool) -> str:
    """Point ``alias`` at ``version`` (default: the latest); the gate guards ``champion``. Returns what was done.

    The gate refuses a champion whose run's test AP is below the current
    champion's (or unknown), unless ``force``.
    """
    if alias not in ALIASES:
        raise RegistryError(f"--alias: expected one of {', '.join(ALIASES)}, got {alias!r}")
    with _quiet():
        if version is None:
            version = str(_latest(client, name, "promote").version)
        candidate = resolve(client, f"models:/{name}/{version}", "--version")
        current: RegisteredVersion | None
        try:
            current = resolve(client, f"models:/{name}@{alias}", "--alias")
        except MissingModel:
            current = None
        if current is not None and current.version == candidate.version:
            return f"{alias}: {name} version {candidate.version} already ({_ap(candidate)})"
        forced = ""
        if alias == "champion" and current is not None:
            new, old = candidate.metrics.get(GATE_METRIC), current.metrics.get(GATE_METRIC)
            refusal = None
            if new is None:
                refusal = f"version {candidate.version} has no logged {GATE_METRIC}"
            elif old is not None and new < old:
                refusal = (
                    f"version {candidate.version} has test AP {new:.4f}, below champion version "
                    f"{current.version}'s {old:.4f}"
                )
            if refusal and not force:
                raise RegistryError(f"promote refused: {refusal}; not promoted (pass --force to promote anyway)")
            if refusal:
                forced = f" (forced: {refusal})"
        client.set_registered_model_alias(name, alias, candidate.version)
    was = f", was version {current.version} ({_ap(current)})" if current is not None else ""
    return f"{alias}: {name} version {candidate.version} ({_ap(candidate)}){was}{forced}"


def _ap(version: RegisteredVersion) -> str:
    value = version.metrics.get(GATE_METRIC)
    return f"test AP {value:.4f}" if value is not None else "no test AP"
