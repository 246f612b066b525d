"""The shared vocabulary: typed event records, their decoders and Arrow schemas.

Every package imports from here; this package imports nothing of the project.
"""

from contracts.errors import RecordError
from contracts.guards import DecodeLimits
from contracts.records import (
    ALERT_SCHEMA_VERSION,
    Alert,
    DeadLetter,
    FeatureContribution,
    Label,
    Reasons,
    SourcePosition,
    Transaction,
    decode_label,
    decode_labels,
    decode_transaction,
    decode_transactions,
    encode,
    extra_fields,
)

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "Alert",
    "DeadLetter",
    "DecodeLimits",
    "FeatureContribution",
    "Label",
    "Reasons",
    "RecordError",
    "SourcePosition",
    "Transaction",
    "decode_label",
    "decode_labels",
    "decode_transaction",
    "decode_transactions",
    "encode",
    "extra_fields",
]
