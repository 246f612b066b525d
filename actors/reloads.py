"""Classifier versions and decision rules replaced while an actor runs.

A new classifier version is loaded off the event loop (the registry poll), new
rules are checked when they are set; either waits here until the loop installs
it between two micro-batches, in every owned partition at once, so no
micro-batch is scored half by the old and half by the new. A partition that
arrives later is configured with what is current.
"""

from __future__ import annotations

import asyncio
import logging

from actors.clients import Clients
from actors.partition import PartitionProcessor
from actors.serving import ClassifierServing, Served
from configs import RuleSettings, Settings
from features import FeatureRegistry
from models.sources import RuleSource

log = logging.getLogger(__name__)


class Reloads:
    """The served classifiers and the reloaded rules, and what waits to be installed of them."""

    def __init__(self, settings: Settings, name: str, serving: ClassifierServing, clients: Clients) -> None:
        self.settings = settings
        self.name = name
        self.serving = serving
        self.clients = clients
        #: Rules reloaded while running (None: the config's).
        self.rules: tuple[RuleSettings, ...] | None = None
        #: Loaded or set, not installed yet (the loop installs them between two micro-batches).
        self._served_next: Served | None = None
        self._rules_next: tuple[RuleSettings, ...] | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """True when a classifier version or rules wait to be installed."""
        return self._served_next is not None or self._rules_next is not None

    async def start(self) -> None:
        """Load the served version (the first micro-batch is scored with it) and poll the registry from now on."""
        if not self.serving.enabled:
            return
        # the first micro-batch is scored with the served version (the job checked it can be loaded)
        try:
            await asyncio.to_thread(self.serving.refresh, True)
        except Exception as exc:  # shown in status; the poll keeps trying
            self.serving.error = f"{type(exc).__name__}: {exc}"
            log.error("cannot serve %s: %s", self.serving.uri, exc)
        self._poller = asyncio.get_running_loop().create_task(self._poll_registry())

    def stop(self) -> None:
        """Stop polling the registry."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll_registry(self) -> None:
        """Ask the registry every ``poll_interval_s`` whether an alias moved; load a new version off the loop."""
        interval = self.settings.scoring.classifier.poll_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                served = await asyncio.to_thread(self.serving.refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store hiccup keeps the current version
                self.serving.error = f"{type(exc).__name__}: {exc}"
                log.warning("registry poll failed (serving %s): %s", self.serving.served.versions, exc)
                continue
            self.serving.error = None
            if served is not None:
                self._served_next = served
                metrics = self.clients.metrics
                if metrics is not None:
                    metrics.model_swaps.inc(1, tags={"actor": self.name})

    def set_rules(self, rules: tuple[RuleSettings, ...]) -> str:
        """Decide with these rules from the next micro-batch on; returns their version.

        Checked here first (unknown feature, bad expression: ConfigError, the old rules stay).
        """
        scoring = self.settings.scoring
        version = RuleSource(rules, FeatureRegistry.from_settings(self.settings.features), "rules reload",
                             scoring.block_threshold).version
        if rules != self.rules:
            self.rules = self._rules_next = rules
        return version

    def configure(self, processor: PartitionProcessor) -> None:
        """A partition just restored scores with the served classifiers and the current rules."""
        processor.use_classifiers(self.serving.served)
        if self.rules is not None:
            processor.use_rules(self.rules)

    def install(self, processors: dict[int, PartitionProcessor]) -> None:
        """Between micro-batches: every partition scores with the newest loaded models and rules."""
        served, self._served_next = self._served_next, None
        rules, self._rules_next = self._rules_next, None
        for processor in processors.values():
            if served is not None:
                processor.use_classifiers(served)
            if rules is not None:
                processor.use_rules(rules)
