"""Typed, validated settings and the bundled YAML configurations.

At the bottom of the import graph: nothing here imports the rest of the
project. :func:`load_settings` reads and validates a config (a rules file's
shape included) but does not compile the rules' conditions against the
features; programs load their settings with
:func:`models.checked_settings.load_settings`, which does.
"""

from configs.settings import (
    AnomalySettings,
    AutoscaleSettings,
    BacktestSettings,
    ClassifierSettings,
    ConfigError,
    ConsoleSettings,
    ConsoleUser,
    EvaluationSettings,
    FeatureSettings,
    FusionSettings,
    GeneratorSettings,
    HistorySettings,
    KafkaSettings,
    MlflowSettings,
    OnlineSettings,
    ProducerSettings,
    RuleSettings,
    ScoringSettings,
    Settings,
    StackingSettings,
    StreamSettings,
    TopicSettings,
    TopicsSettings,
    TrainingSettings,
    default_config_path,
    load_settings,
)

__all__ = [
    "AnomalySettings",
    "AutoscaleSettings",
    "BacktestSettings",
    "ClassifierSettings",
    "ConfigError",
    "ConsoleSettings",
    "ConsoleUser",
    "EvaluationSettings",
    "FeatureSettings",
    "FusionSettings",
    "GeneratorSettings",
    "HistorySettings",
    "KafkaSettings",
    "MlflowSettings",
    "OnlineSettings",
    "ProducerSettings",
    "RuleSettings",
    "ScoringSettings",
    "Settings",
    "StackingSettings",
    "StreamSettings",
    "TopicSettings",
    "TopicsSettings",
    "TrainingSettings",
    "default_config_path",
    "load_settings",
]
