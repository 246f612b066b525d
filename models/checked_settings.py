"""The settings a program starts with: loaded by ``configs``, then the rules file compiled against the features.

``configs`` sits at the bottom of the import graph, so its loaders read a rules
file (``scoring.rules_file``) and check its shape but cannot compile the
conditions: that needs the feature registry. The loaders here add that step,
so every entry point (the CLI, ``python -m pipelines.stream``, benchmarks,
notebooks, test fixtures) that loads its settings here starts only with rules
that compile. A condition naming an unknown feature stops start-up with one
line naming the rules file, ``rules[i]``, the rule and the fix, followed by
``[in <config file>]`` when the settings came from a file.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "rules.yaml").write_text("rules: [{name: fast, when: 'speed > 900', action: block, score: 0.99}]")
>>> _ = (folder / "config.yaml").write_text("scoring: {rules_file: rules.yaml}")
>>> load_settings(folder / "config.yaml")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
configs.settings.ConfigError: config error: /...rules.yaml: rules[0].when: rule 'fast': unknown feature 'speed' (did you mean: speed_kmh?) [in /.../config.yaml]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from configs import ConfigError, Settings, default_config_path
from configs import settings as configs_settings
from models.rules import compile_rules


def check_rules_file(settings: Settings) -> None:
    """Compile the rules read from ``scoring.rules_file`` against the configured features; nothing to do without
    a rules file (inline ``scoring.rules`` are compiled where the scorer is built, as before).

    A rule that does not compile is a one-line ConfigError naming the file and ``rules[i]``, the same message as
    :func:`models.rules.load_rules_file` gives for that file.
    """
    scoring = settings.scoring
    if not scoring.rules_file:
        return
    # imported here (as when configs ran this check): only a rules file needs the feature package, and pyarrow
    from features.registry import FeatureRegistry

    names = FeatureRegistry.from_settings(settings.features).names
    where = f"{Path(scoring.rules_file)}: rules"
    compile_rules(scoring.rules, names, where=where, block_threshold=scoring.block_threshold)


def settings_from_dict(data: dict[str, Any] | None, base_dir: str | os.PathLike[str] | None = None) -> Settings:
    """:func:`configs.settings.settings_from_dict` (validation, the rules file read relative to ``base_dir``, default
    the working directory), then :func:`check_rules_file`; raises :class:`configs.ConfigError`."""
    settings = configs_settings.settings_from_dict(data, base_dir=base_dir)
    check_rules_file(settings)
    return settings


def load_settings(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """The settings in ``path`` (default: configs/local.yaml) with ``overrides`` (dotted keys) applied, as
    :func:`configs.load_settings` reads them, and the rules file compiled (:func:`check_rules_file`).

    What every entry point calls: any problem, in the config or in its rules file, is one ConfigError line
    ending with `` [in <config file>]``.
    """
    settings = configs_settings.load_settings(path, overrides)
    try:
        check_rules_file(settings)
    except ConfigError as exc:
        config_path = Path(path) if path is not None else default_config_path()
        raise ConfigError(f"{exc} [in {config_path}]") from None
    return settings
