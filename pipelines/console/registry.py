"""The champion and challenger versions in the MLflow registry, as the console's status bar shows them.

The job's status says which versions the actors *serve*; this says which
versions the registry's ``champion`` and ``challenger`` aliases (those
``fraudstream promote`` sets) name now, for the model
``scoring.classifier.model_uri`` names. Side by side, the page shows a swap in
progress (an alias moved, the actors have not polled yet) or a job that does
not follow the alias (a URI pinned to a version). Versions read ``name/version``,
as the actors report theirs, so the two compare as strings.

MLflow calls block and take a while, so :class:`RegistryWatch` keeps an answer
for ``console.registry_interval_s`` and the web app calls it in a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from configs import Settings
from connectors.registry import ALIASES, MissingModel, RegistryError, connect, model_name, resolve, store_exists

log = logging.getLogger("fraudstream.console")

#: The setting the model's name comes from (named in messages).
OPTION = "scoring.classifier.model_uri"


class RegistryVersions(msgspec.Struct, frozen=True, kw_only=True):
    """The registry's view of the classifier; all None without a ``model_uri`` (nothing to show)."""

    #: The registered model the console looks at.
    model: str | None = None
    #: What the champion and challenger aliases name (``name/version``); None when unset or unknown.
    champion: str | None = None
    challenger: str | None = None
    #: Why the champion is not known (store unreachable, model not registered, alias unset): one line.
    message: str | None = None


def registry_versions(client: Any, model: str) -> RegistryVersions:
    """What the aliases of ``model`` name now: an unset challenger is None, an unknown champion is the message.

    Raises ``RegistryError`` when the store fails to answer.
    """
    named: dict[str, str | None] = {}
    missing: dict[str, str] = {}
    for alias in ALIASES:
        try:
            found = resolve(client, f"models:/{model}@{alias}", OPTION)
        except MissingModel as exc:  # the model is not registered or the alias not set
            named[alias], missing[alias] = None, str(exc)
        else:
            named[alias] = f"{found.name}/{found.version}"
    champion, challenger = ALIASES
    return RegistryVersions(model=model, champion=named[champion], challenger=named[challenger],
                            message=missing.get(champion))  # fmt: skip


class RegistryWatch:
    """The registry's versions, asked at most every ``interval_s``; :meth:`read` blocks, so call it in a thread.

    Never raises: whatever goes wrong is the answer's ``message``. While one
    thread asks the registry, the others get the previous answer instead of
    waiting for a slow store.
    """

    def __init__(self, settings: Settings, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.settings = settings
        self.interval_s = settings.console.registry_interval_s if interval_s is None else interval_s
        self.clock = clock
        self._client: Any = None
        self._latest: RegistryVersions | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def read(self) -> RegistryVersions:
        """The versions now, or the answer kept from less than ``interval_s`` ago."""
        if not self.settings.scoring.classifier.model_uri:
            return RegistryVersions()  # no batch classifier: no registry model to show, nothing asked
        latest = self._latest
        if latest is not None:
            if self.clock() - self._read_at < self.interval_s or not self._lock.acquire(blocking=False):
                return latest  # fresh, or another thread is asking the registry right now
        else:
            self._lock.acquire()
        try:
            if self._latest is None or self.clock() - self._read_at >= self.interval_s:
                self._latest, self._read_at = self._ask(), self.clock()
            return self._latest
        finally:
            self._lock.release()

    def _ask(self) -> RegistryVersions:
        mlflow = self.settings.mlflow
        model = None
        try:
            model = model_name(self.settings.scoring.classifier.model_uri, OPTION)
            if self._client is None:
                if not store_exists(mlflow):  # connect() would create it: the console only reads
                    return RegistryVersions(model=model, message=(
                        f"mlflow.tracking_uri: {mlflow.tracking_uri} holds no model yet; train and promote one "
                        "(`fraudstream train`, `fraudstream promote`)"))  # fmt: skip
                self._client = connect(mlflow)
            return registry_versions(self._client, model)
        except RegistryError as exc:
            self._client = None  # connect again next time
            return RegistryVersions(model=model, message=str(exc))
        except Exception as exc:  # an MLflow surprise must not take the status bar down; the log has the details
            self._client = None
            log.warning("cannot read the MLflow registry at %s", mlflow.tracking_uri, exc_info=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return RegistryVersions(model=model, message=f"mlflow.tracking_uri: cannot read the registry at "
                                                         f"{mlflow.tracking_uri} ({first})")  # fmt: skip
