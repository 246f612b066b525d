"""Histories through the column mapping: other names and types give the same features; absent fields are neutral."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from configs import HistorySettings, load_settings
from connectors.history import HistoryError, iso_ms, parse_time, read_history
from features import FeatureRegistry, build_feature_table
from synthetic import generate, write_history
from tests.integration.streamkit import run_cli

SETTINGS = load_settings()
REGISTRY = FeatureRegistry.from_settings(SETTINGS.features)
OPTIONAL = ("currency", "merchant_id", "merchant_category", "terminal_id", "device_id", "country", "lat", "lon",
            "channel")  # fmt: skip
#: Features that need an optional field, and so are neutral without it.
DEPENDENT = ("distance_km", "speed_kmh", "new_merchant", "new_country", "new_device", "distinct_merchants_24h",
             "distinct_countries_24h", "terminal_tx_count", "terminal_fraud_count", "terminal_fraud_rate",
             "terminal_recent_frauds", "terminal_hours_since_fraud")  # fmt: skip


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 accounts x 7 days with numeric-string ids and whole-second times (what the mapped copy can express)."""
    history = generate(msgspec.structs.replace(SETTINGS.generator, accounts=300, days=7, seed=11))
    tx, labels = history.transactions, history.labels
    tx = _replace(tx, "account_id", _numeric(tx.column("account_id")))
    tx = _replace(tx, "event_time", _whole_seconds(tx.column("event_time")))
    labels = _replace(labels, "account_id", _numeric(labels.column("account_id")))
    labels = _replace(labels, "label_time", _whole_seconds(labels.column("label_time")))
    folder = tmp_path_factory.mktemp("native")
    write_history(type(history)(transactions=tx, labels=labels), folder)
    return folder


def _replace(table: pa.Table, name: str, column: pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), column)


def _numeric(ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """'A0001104' -> '1104': ids an integer column can carry."""
    return pc.cast(pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int64()), pa.string())


def _whole_seconds(times: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.multiply(pc.divide(times.cast(pa.int64()), 1000), 1000).cast(pa.timestamp("ms", tz="UTC"))


def _features(path: Path, settings: HistorySettings, labels: Path | None = None) -> pa.Table:
    history = read_history(path, settings, labels)
    return build_feature_table(history.transactions, history.labels, SETTINGS.features, partitions=4)


def _feature_matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(n).to_numpy() for n in REGISTRY.names])


#: Our field -> the column name `_write_theirs` gives it (times in epoch seconds).
THEIR_COLUMNS = {
    "transaction_id": "TxnID", "account_id": "card", "event_time": "ts", "amount": "value", "currency": "ccy",
    "merchant_id": "merchant", "merchant_category": "mcc", "terminal_id": "pos", "device_id": "device",
    "country": "ctry", "lat": "latitude", "lon": "longitude", "is_fraud": "fraud", "fraud_scenario": "scenario",
    "label": "outcome", "label_time": "reported",
}  # fmt: skip


def _write_theirs(native: Path, tx_paths: list[Path], labels_path: Path) -> None:
    """The native history under `THEIR_COLUMNS` (epoch seconds, integer ids), its rows split over ``tx_paths``."""
    tx = pq.read_table(native / "transactions.parquet")
    labels = pq.read_table(native / "labels.parquet")
    theirs = pa.table({
        "TxnID": tx.column("transaction_id"),
        "card": pc.cast(tx.column("account_id"), pa.int64()),
        "ts": pc.divide(tx.column("event_time").cast(pa.int64()), 1000),  # epoch seconds
        "value": tx.column("amount"),
        "ccy": tx.column("currency"),
        "merchant": tx.column("merchant_id"),
        "mcc": tx.column("merchant_category"),
        "pos": tx.column("terminal_id"),
        "device": tx.column("device_id"),
        "ctry": tx.column("country"),
        "latitude": tx.column("lat"),
        "longitude": tx.column("lon"),
        "channel": tx.column("channel"),
        "fraud": pc.cast(tx.column("is_fraud"), pa.int8()),
        "scenario": tx.column("fraud_scenario"),
    })  # fmt: skip
    their_labels = pa.table({
        "TxnID": labels.column("transaction_id"),
        "outcome": labels.column("label"),
        "reported": pc.divide(labels.column("label_time").cast(pa.int64()), 1000),
    })  # fmt: skip
    step = -(-theirs.num_rows // len(tx_paths))
    for i, path in enumerate(tx_paths):
        pq.write_table(theirs.slice(i * step, step), path)
    pq.write_table(their_labels, labels_path)


def test_renamed_columns_epoch_seconds_and_integer_ids_give_the_same_features(native: Path, tmp_path: Path) -> None:
    _write_theirs(native, [tmp_path / "tx.parquet"], tmp_path / "outcomes.parquet")
    mapping = HistorySettings(columns=THEIR_COLUMNS, epoch_unit="s")
    mapped = _features(tmp_path / "tx.parquet", mapping, labels=tmp_path / "outcomes.parquet")
    reference = _features(native, HistorySettings())
    assert mapped.num_rows == reference.num_rows
    for name in ("transaction_id", "account_id", "event_time", "partition", "label", "is_fraud", "fraud_scenario"):
        assert mapped.column(name).equals(reference.column(name)), name
    assert np.array_equal(_feature_matrix(mapped), _feature_matrix(reference))
    assert mapped.schema.metadata[b"feature_version"] == reference.schema.metadata[b"feature_version"]


def test_features_command_reads_a_folder_of_parquet_files_through_the_mapping(
    native: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    _write_theirs(native, [folder / "part-0.parquet", folder / "part-1.parquet"], folder / "labels.parquet")
    config = tmp_path / "config.yaml"
    config.write_text(f"history: {{columns: {json.dumps(THEIR_COLUMNS)}, epoch_unit: s}}\n")
    code, out, err = run_cli(monkeypatch, capsys, "features", "--history", str(folder), "--out",
                             str(tmp_path / "table.parquet"), "--partitions", "4", "--config", str(config))  # fmt: skip
    assert code == 0, err
    table = pq.read_table(tmp_path / "table.parquet")
    reference = _features(native, HistorySettings())
    assert json.loads(out.strip().splitlines()[-1])["rows"] == table.num_rows == reference.num_rows
    for name in ("transaction_id", "account_id", "event_time", "partition", "label", "is_fraud", "fraud_scenario"):
        assert table.column(name).equals(reference.column(name)), name
    assert np.array_equal(_feature_matrix(table), _feature_matrix(reference))
    times = reference.column("event_time").cast(pa.int64())
    first, last = iso_ms(pc.min(times).as_py()), iso_ms(pc.max(times).as_py())
    assert f"history: {first} .. {last} (whole history)" in err


def test_features_command_names_an_unmapped_column(
    native: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    _write_theirs(native, [folder / "part-0.parquet"], folder / "labels.parquet")
    code, _, err = run_cli(monkeypatch, capsys, "features", "--history", str(folder), "--out",
                           str(tmp_path / "table.parquet"))  # fmt: skip
    assert code == 2
    assert "history.columns.transaction_id:" in err and "has no column 'transaction_id'" in err
    assert not (tmp_path / "table.parquet").exists()


def test_backtest_until_a_date_replays_that_whole_day(
    native: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scores, metrics = tmp_path / "scores.parquet", tmp_path / "metrics.json"
    code, _, err = run_cli(monkeypatch, capsys, "backtest", "--history", str(native), "--no-model",
                           "--from", "2026-01-03", "--until", "2026-01-04", "--out", str(metrics),
                           "--scores-out", str(scores))  # fmt: skip
    assert code == 0, err
    assert "history: 2026-01-03T00:00:00Z .. 2026-01-04T23:59:59.999Z (until: whole day)" in err
    times = pq.read_table(scores).column("event_time").cast(pa.int64())
    history = pq.read_table(native / "transactions.parquet").column("event_time").cast(pa.int64())
    start, end = parse_time("2026-01-03", "--from"), parse_time("2026-01-05", "--from")
    in_days = pc.and_(pc.greater_equal(history, start), pc.less(history, end))
    assert len(times) == pc.sum(in_days).as_py() > 0  # both days, the second one to its last row
    assert pc.max(times).as_py() > parse_time("2026-01-04T12:00:00Z", "--until")
    assert json.loads(metrics.read_text())["until_requested"] == "2026-01-04T23:59:59Z"


def test_missing_optional_columns_make_their_features_neutral(native: Path, tmp_path: Path) -> None:
    tx = pq.read_table(native / "transactions.parquet")
    pq.write_table(tx.drop_columns(list(OPTIONAL)), tmp_path / "bare.parquet")
    history = read_history(tmp_path / "bare.parquet", HistorySettings(), native / "labels.parquet")
    assert set(history.transactions.column_names) == {"transaction_id", "account_id", "event_time", "amount",
                                                      "is_fraud", "fraud_scenario"}  # fmt: skip
    table = build_feature_table(history.transactions, history.labels, SETTINGS.features, partitions=4)
    full = _features(native, HistorySettings())
    for spec in REGISTRY.specs:
        values = table.column(spec.name).to_numpy()
        if spec.name in DEPENDENT:
            assert (values == spec.neutral).all(), spec.name
        else:
            assert np.array_equal(values, full.column(spec.name).to_numpy()), spec.name


def test_a_directory_of_parquet_files_reads_as_one_history(native: Path, tmp_path: Path) -> None:
    tx = pq.read_table(native / "transactions.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    half = tx.num_rows // 2
    pq.write_table(tx.slice(0, half), folder / "part-0.parquet")
    pq.write_table(tx.slice(half), folder / "part-1.parquet")
    pq.write_table(pq.read_table(native / "labels.parquet"), folder / "labels.parquet")
    history = read_history(folder, HistorySettings())
    assert history.transactions.num_rows == tx.num_rows and history.labels is not None
    assert history.labels_source.endswith("labels.parquet")


def test_a_label_column_is_released_after_the_delay(native: Path, tmp_path: Path) -> None:
    tx = pq.read_table(native / "transactions.parquet")
    pq.write_table(tx.append_column("Class", pc.cast(tx.column("is_fraud"), pa.int64())), tmp_path / "t.parquet")
    history = read_history(tmp_path / "t.parquet", HistorySettings(columns={"label": "Class"}, label_delay_days=2))
    assert history.labels_source == "label column" and history.labels is not None
    assert history.labels.num_rows == tx.num_rows
    frauds = history.labels.filter(pc.equal(history.labels.column("label"), "fraud"))
    assert frauds.num_rows == pc.sum(tx.column("is_fraud")).as_py()
    joined = history.labels.join(tx.select(["transaction_id", "event_time"]), "transaction_id")
    delay = pc.subtract(joined.column("label_time").cast(pa.int64()), joined.column("event_time").cast(pa.int64()))
    assert pc.all(pc.equal(delay, 2 * 86_400_000)).as_py()


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"account_id": "card_no"}, "history.columns.account_id: column 'card_no' is not in"),
        ({"lat": "lat"}, None),
        ({"event_time": "channel"}, "history.columns.event_time: column 'channel' could not be read"),
        ({"amount": "merchant_id"}, "history.columns.amount: column 'merchant_id' has type string; expected numbers"),
        ({"label": "channel"}, "history.columns.label: column 'channel' holds 'pos'; expected fraud/genuine"),
    ],
)
def test_bad_mappings_name_the_field_in_one_line(native: Path, columns: dict, expected: str | None) -> None:
    if expected is None:
        read_history(native, HistorySettings(columns=columns))
        return
    with pytest.raises(HistoryError) as info:
        read_history(native, HistorySettings(columns=columns))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_missing_files_and_required_columns_say_what_to_do(native: Path, tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"--history: .* does not exist"):
        read_history(tmp_path / "nowhere", HistorySettings())
    with pytest.raises(HistoryError, match=r"--labels: .* does not exist"):
        read_history(native, HistorySettings(), tmp_path / "labels.parquet")
    tx = pq.read_table(native / "transactions.parquet")
    pq.write_table(tx.drop_columns(["amount"]), tmp_path / "no_amount.parquet")
    with pytest.raises(HistoryError, match=r"history.columns.amount: .* has no column 'amount'; map yours"):
        read_history(tmp_path / "no_amount.parquet", HistorySettings())
    pq.write_table(tx.drop_columns(["lon"]), tmp_path / "no_lon.parquet")
    with pytest.raises(HistoryError, match="lat and lon go together"):
        read_history(tmp_path / "no_lon.parquet", HistorySettings())
    (tmp_path / "empty").mkdir()
    with pytest.raises(HistoryError, match="no Parquet files"):
        read_history(tmp_path / "empty", HistorySettings())
