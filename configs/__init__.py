"""Typed, validated settings and the bundled YAML configurations."""

from configs.settings import (
    ConfigError,
    FeatureSettings,
    GeneratorSettings,
    KafkaSettings,
    MlflowSettings,
    ProducerSettings,
    Settings,
    StreamSettings,
    ScoringSettings,
    RuleSettings,
    AnomalySettings,
    TopicSettings,
    TopicsSettings,
    default_config_path,
    load_settings,
)

__all__ = [
    "ConfigError",
    "FeatureSettings",
    "GeneratorSettings",
    "KafkaSettings",
    "MlflowSettings",
    "ProducerSettings",
    "Settings",
    "StreamSettings",
    "ScoringSettings",
    "RuleSettings",
    "AnomalySettings",
    "TopicSettings",
    "TopicsSettings",
    "default_config_path",
    "load_settings",
]
