"""The batch classifier served from the MLflow registry, swapped while scoring goes on.

A scoring actor serves ``scoring.classifier.model_uri`` (e.g.
``models:/fraud-classifier@champion``) and, in shadow, the same model's
``challenger_alias``. :class:`ClassifierServing` resolves both in the
registry, loads the versions they name (feature layout checked against the
actor's features: a model trained on another layout is refused) and, every
``poll_interval_s``, asks again; when an alias has moved it loads the new
version off the event loop and hands it over. The scoring loop installs it
between two micro-batches, in every partition at once (``Served``): no
micro-batch is scored half by one version and half by the other, none is
skipped or scored twice, and every alert names the version that scored it.

Start-up (:func:`check_serving`, run by the job before any actor starts): a
malformed URI, an unknown model, a version trained on other features or a
model that does not load stop the job with one line. A URI that names nothing
yet (the model is not registered, the alias not set) does too with
``when_missing: error``; with ``wait`` the job scores without the classifier
and serves it from the first poll that finds it. A challenger alias that is
not set is simply no challenger.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.messages import ServingStatus
from configs import Settings
from connectors.registry import MissingModel, RegistryError, connect, load_batch_model, resolve, store_exists
from features import FeatureRegistry
from models.batch import ClassifierSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The classifiers in use: the champion scores and decides, the challenger scores in shadow."""

    champion: ClassifierSource | None = None
    challenger: ClassifierSource | None = None

    @property
    def versions(self) -> tuple[str | None, str | None]:
        """(champion, challenger) registry versions, ``name/version``."""
        return (self.champion.version if self.champion else None, self.challenger.version if self.challenger else None)


def challenger_uri(settings: Settings) -> str:
    """The shadow model's URI: the champion URI's model under ``challenger_alias`` ("" when none).

    >>> from configs import load_settings
    >>> challenger_uri(load_settings())
    'models:/fraud-classifier@challenger'
    """
    classifier = settings.scoring.classifier
    if not classifier.challenger_alias or "@" not in classifier.model_uri:
        return ""
    return f"{classifier.model_uri.rsplit('@', 1)[0]}@{classifier.challenger_alias}"


class ClassifierServing:
    """Resolves and loads the served classifiers; :meth:`refresh` says when an alias moved."""

    def __init__(self, settings: Settings, registry: FeatureRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else FeatureRegistry.from_settings(settings.features)
        self.uri = settings.scoring.classifier.model_uri
        self.challenger_uri = challenger_uri(settings)
        self.served = Served()
        self._client: Any = None
        #: Versions swapped in after the first load, and the last poll's error (status).
        self.swaps = 0
        self.error: str | None = None
        self.last_poll = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.uri)

    def _connect(self) -> Any:
        if self._client is None:
            if not store_exists(self.settings.mlflow):
                return None  # a local store nothing was ever registered in: nothing to serve yet
            self._client = connect(self.settings.mlflow)
        return self._client

    def _resolve(self, client: Any, uri: str, option: str, required: bool) -> str | None:
        """The ``models:/NAME/VERSION`` URI that ``uri`` names now; None when it names nothing yet."""
        try:
            return resolve(client, uri, option).uri
        except MissingModel:
            if required:
                raise
            return None

    def _load(self, client: Any, uri: str, option: str) -> ClassifierSource:
        model = load_batch_model(client, uri, option)
        try:
            return ClassifierSource(model, self.registry, self.settings.scoring)
        except ValueError as exc:
            raise RegistryError(f"{option}: {exc}") from None

    def refresh(self, initial: bool = False) -> Served | None:
        """Resolve both aliases; load what moved. The new :class:`Served` when anything changed, else None.

        With ``initial``, a champion URI naming nothing yet raises ``MissingModel``
        unless ``when_missing`` is ``wait``. Raises ``RegistryError`` (one line) for
        a URI or model that cannot be served.
        """
        self.last_poll = time.time()
        if not self.enabled:
            return None
        option = "scoring.classifier.model_uri"
        required = initial and self.settings.scoring.classifier.when_missing == "error"
        client = self._connect()
        if client is None:
            if required:
                raise MissingModel(
                    f"{option}: the MLflow store {self.settings.mlflow.tracking_uri} holds no model yet; "
                    "train and promote one (`fraudstream train`, `fraudstream promote`) or set "
                    "scoring.classifier.when_missing: wait"
                )
            return None
        champion_uri = self._resolve(client, self.uri, option, required)
        shadow_uri = (self._resolve(client, self.challenger_uri, "scoring.classifier.challenger_alias", False)
                      if self.challenger_uri else None)
        if shadow_uri == champion_uri:
            shadow_uri = None  # the challenger was promoted: nothing to compare in shadow
        current = self.served
        wanted = (self._version_of(champion_uri), self._version_of(shadow_uri))
        if wanted == current.versions:
            return None
        champion = current.champion if wanted[0] == current.versions[0] else (
            self._load(client, champion_uri, option) if champion_uri else None)
        challenger = current.challenger if wanted[1] == current.versions[1] else (
            self._load(client, shadow_uri, "scoring.classifier.challenger_alias") if shadow_uri else None)
        self.served = Served(champion, challenger)
        if not initial:
            self.swaps += 1
        log.info("serving classifier %s (challenger %s)", *self.served.versions)
        return self.served

    @staticmethod
    def _version_of(uri: str | None) -> str | None:
        """``models:/NAME/VERSION`` -> ``NAME/VERSION`` (the source's version string)."""
        return uri.removeprefix("models:/") if uri else None

    def status(self) -> ServingStatus:
        """The URI served, the versions in use, the swaps so far and the latest poll (its time and error)."""
        champion, challenger = self.served.versions
        return ServingStatus(uri=self.uri, champion=champion, challenger=challenger, swaps=self.swaps,
                             last_poll=self.last_poll or None, error=self.error)


def check_serving(settings: Settings) -> ServingStatus:
    """What the job will serve, checked before any actor starts; RegistryError (one line) when it cannot."""
    serving = ClassifierServing(settings)
    serving.refresh(initial=True)
    return serving.status()
