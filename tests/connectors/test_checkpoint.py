"""Checkpoint store: round trips, sequence numbers across stores and processes, retention, verification
(damaged or missing files are passed over and counted, never loaded), a writer SIGKILLed mid-blob,
and one-line errors for unusable URIs."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from configs import ConfigError
from connectors.checkpoint import CheckpointStore

REPO = Path(__file__).resolve().parents[2]


def seq_name(seq: int) -> str:
    return f"{seq:012d}"


def files(root: Path, key: str) -> list[str]:
    return sorted(p.name for p in (root / key).iterdir())


def python(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    """A child interpreter (this venv's) running ``code`` with the repo importable."""
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_blob_and_the_meta(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    blobs = {"state": os.urandom(100_000), "model": b"\x00\x01", "empty": b""}
    meta = {"offsets": {"transactions": 1234, "labels": 99}, "feature_version": "fs1-abc", "scored": 7}
    ref = store.save("transactions-3", blobs, meta)
    assert (ref.key, ref.seq) == ("transactions-3", 1) and ref.created_ms > 1_700_000_000_000
    loaded = CheckpointStore(str(tmp_path)).load_latest("transactions-3")
    assert loaded is not None
    assert loaded.blobs == blobs and loaded.meta == meta and loaded.ref == ref
    assert (loaded.seq, loaded.created_ms, loaded.skipped) == (1, ref.created_ms, ())
    assert store.keys() == ["transactions-3"] and store.list("transactions-3") == [ref]
    assert store.load_latest("transactions-4") is None and store.list("transactions-4") == []
    manifest = json.loads((tmp_path / "transactions-3" / f"{seq_name(1)}.manifest.json").read_text())
    assert manifest["blobs"]["state"]["size"] == 100_000 and manifest["meta"] == meta


def test_file_uri_and_plain_path_are_the_same_store(tmp_path: Path) -> None:
    assert tmp_path.as_uri().startswith("file:///")
    CheckpointStore(str(tmp_path)).save("k", {"x": b"plain"}, {"n": 1})
    by_uri = CheckpointStore(tmp_path.as_uri())
    assert by_uri.save("k", {"x": b"uri"}, {"n": 2}).seq == 2
    assert [r.seq for r in CheckpointStore(str(tmp_path)).list("k")] == [1, 2]
    latest = by_uri.load_latest("k")
    assert latest is not None and latest.blobs == {"x": b"uri"}


def test_relative_path_resolves_against_the_working_directory_once(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = CheckpointStore("ckpt")
    monkeypatch.chdir(REPO)  # moving away later changes nothing
    store.save("k", {"x": b"1"}, {})
    assert (tmp_path / "ckpt" / "k" / f"{seq_name(1)}.manifest.json").is_file()
    assert not (REPO / "ckpt").exists()


def test_object_store_path_writes_the_manifest_directly() -> None:
    """Arrow's in-memory filesystem (``mock://``, not local) takes the object-store path: no rename."""
    store = CheckpointStore("mock:///bucket/prefix", keep=2)
    for n in range(4):
        store.save("t-0", {"x": bytes([n]) * 10}, {"n": n})
    latest = store.load_latest("t-0")
    assert latest is not None and latest.meta == {"n": 3} and latest.blobs == {"x": b"\x03" * 10}
    assert [r.seq for r in store.list("t-0")] == [3, 4] and store.keys() == ["t-0"]


# ---------------------------------------------------------------------------------------------- sequence
def test_sequence_numbers_continue_across_stores_and_past_leftovers(tmp_path: Path) -> None:
    for n in range(3):
        assert CheckpointStore(str(tmp_path), keep=1).save("k", {"x": b"%d" % n}, {}).seq == n + 1
    (tmp_path / "k" / seq_name(7)).mkdir()  # what a writer killed at 7 left behind
    assert CheckpointStore(str(tmp_path)).save("k", {"x": b"8"}, {}).seq == 8
    assert CheckpointStore(str(tmp_path)).save("other", {}, {}).seq == 1  # per key


def test_concurrent_writers_of_different_keys_in_separate_processes(tmp_path: Path) -> None:
    root = tmp_path / "shared"  # does not exist yet: both create it
    child = """
import sys
from connectors.checkpoint import CheckpointStore
store = CheckpointStore(sys.argv[1], keep=3)
for n in range(20):
    store.save(sys.argv[2], {"state": sys.argv[2].encode() * 1000}, {"n": n})
"""
    children = [python(child, str(root), f"transactions-{p}") for p in range(2)]
    for process in children:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    store = CheckpointStore(str(root))
    assert store.keys() == ["transactions-0", "transactions-1"]
    for key in store.keys():  # noqa: SIM118 (a store, not a dict)
        assert [r.seq for r in store.list(key)] == [18, 19, 20]
        latest = store.load_latest(key)
        assert latest is not None and latest.meta == {"n": 19} and latest.blobs == {"state": key.encode() * 1000}


# ---------------------------------------------------------------------------------------------- retention
def test_retention_keeps_the_newest_and_removes_leftovers(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=2)
    for n in range(3):
        store.save("k", {"x": bytes([n])}, {"n": n})
    # leftovers of killed writers: an incomplete checkpoint and a temporary manifest never moved into place
    (tmp_path / "k" / seq_name(4)).mkdir()
    (tmp_path / "k" / seq_name(4) / "x.bin").write_bytes(b"partial")
    (tmp_path / "k" / f".{seq_name(4)}.manifest.json.0123.tmp").write_text("{")
    store.save("k", {"x": b"5"}, {"n": 5})
    assert files(tmp_path, "k") == [seq_name(3), f"{seq_name(3)}.manifest.json", seq_name(5),
                                    f"{seq_name(5)}.manifest.json"]
    assert [r.seq for r in store.list("k")] == [3, 5]
    assert store.load_latest("k").meta == {"n": 5}  # type: ignore[union-attr]


def test_a_broken_checkpoint_found_by_load_is_removed_and_not_counted_as_kept(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=2)
    for n in range(3):
        store.save("k", {"x": b"v%d" % n}, {"n": n})
    (tmp_path / "k" / seq_name(3) / "x.bin").write_bytes(b"XX")
    assert store.load_latest("k").meta == {"n": 1}  # type: ignore[union-attr]
    store.save("k", {"x": b"v4"}, {"n": 4})
    assert [r.seq for r in store.list("k")] == [2, 4]  # two good ones kept; the broken 3 is gone


# ---------------------------------------------------------------------------------------------- verification
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "same size, other bytes": (lambda blob: blob.write_bytes(b"XXXX"), "fails its checksum"),
    "truncated": (lambda blob: blob.write_bytes(b"v1"), "truncated: 2 of 4 bytes"),
    "too long": (lambda blob: blob.write_bytes(b"v1v1v1"), "longer than the 4 bytes"),
    "missing": (lambda blob: blob.unlink(), "blob b missing"),
    "manifest missing": (lambda blob: (blob.parent.parent / f"{blob.parent.name}.manifest.json").unlink(),
                         "no manifest"),
    "manifest truncated": (lambda blob: (blob.parent.parent / f"{blob.parent.name}.manifest.json").write_text('{"seq'),
                           "unreadable manifest"),
    "manifest of another checkpoint": (
        lambda blob: (blob.parent.parent / f"{blob.parent.name}.manifest.json").write_text(
            (blob.parent.parent / f"{seq_name(1)}.manifest.json").read_text()),
        "manifest names k checkpoint 1"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_counted(tmp_path: Path,
                                                                               damage: str) -> None:
    store = CheckpointStore(str(tmp_path), keep=5)
    store.save("k", {"a": b"a0", "b": b"v0v0"}, {"n": 0})
    store.save("k", {"a": b"a1", "b": b"v1v1"}, {"n": 1})
    harm, reason = DAMAGE[damage]
    harm(tmp_path / "k" / seq_name(2) / "b.bin")
    latest = store.load_latest("k")
    assert latest is not None and latest.seq == 1
    assert latest.meta == {"n": 0} and latest.blobs == {"a": b"a0", "b": b"v0v0"}
    assert [(s.seq, reason in s.reason) for s in latest.skipped] == [(2, True)], latest.skipped
    assert store.skipped == 1 and store.last_skipped == {"k": latest.skipped}


def test_nothing_usable_returns_none_and_keeps_the_reasons(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=5)
    for n in range(2):
        store.save("k", {"x": b"v%d" % n}, {"n": n})
    (tmp_path / "k" / seq_name(3)).mkdir()
    for seq in (1, 2):
        (tmp_path / "k" / seq_name(seq) / "x.bin").write_bytes(b"??")
    assert store.load_latest("k") is None
    assert [(s.seq, s.reason) for s in store.last_skipped["k"]] == [
        (3, "no manifest: its writer stopped before finishing"),
        (2, "blob x fails its checksum"),
        (1, "blob x fails its checksum"),
    ]
    assert str(store.last_skipped["k"][1]) == "k checkpoint 2: blob x fails its checksum"
    assert store.skipped == 3
    store.load_latest("k")
    assert store.skipped == 6  # counted per load: each restore that passed them over


# ---------------------------------------------------------------------------------------------- bad input
def test_meta_that_is_not_json_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(TypeError):
        store.save("k", {"x": b"1"}, {"when": object()})
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("key, blob", [("../escape", "x"), ("a/b", "x"), (".hidden", "x"), ("", "x"), ("k", "a/b")])
def test_keys_and_blob_names_must_be_plain_names(tmp_path: Path, key: str, blob: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        CheckpointStore(str(tmp_path)).save(key, {blob: b""}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri, problem", [
    ("nosuchscheme://bucket/x", "Unrecognized filesystem type"),
    ("file://relative/x", "cannot open"),
    ("s3://", "names no directory or bucket"),
    ("", "is empty"),
])
def test_a_malformed_uri_is_a_one_line_config_error(uri: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"stream\.checkpoint_uri") as error:
        CheckpointStore(uri)
    assert problem in str(error.value) and "\n" not in str(error.value)
    assert "s3://bucket/prefix" in str(error.value)  # the fix


def test_a_path_below_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write to") as error:
        CheckpointStore(str(tmp_path / "file" / "sub"))
    assert str(tmp_path / "file" / "sub") in str(error.value) and "\n" not in str(error.value)


def drop_permission_override() -> None:
    """Remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def unprivileged(code: str, *args: str) -> subprocess.Popen[str]:
    """``python(code)``, subject to file permissions even when the tests run as root."""
    return python(code, *args, preexec_fn=drop_permission_override if os.geteuid() == 0 else None)


def test_permission_denied_is_a_config_error_at_construction() -> None:
    """A directory the process may not write to."""
    child = """
import sys
from connectors.checkpoint import CheckpointStore
from configs import ConfigError
for uri in sys.argv[1:]:
    try:
        CheckpointStore(uri)
    except ConfigError as exc:
        print(exc)
"""
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        readonly = Path(top) / "readonly"
        readonly.mkdir(mode=0o555)
        process = unprivileged(child, str(readonly), str(readonly / "sub"))
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert list(readonly.iterdir()) == []
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line, uri in zip(lines, (str(readonly), str(readonly / "sub"))):
        assert line.startswith(f"config error: stream.checkpoint_uri: cannot write to {uri!r}")
        assert "Permission denied" in line and "writable directory" in line


# ---------------------------------------------------------------------------------------------- crash
CRASHING_WRITER = """
import sys, time
from connectors.checkpoint import CheckpointStore

store = CheckpointStore(sys.argv[1])
store.save("k", {"model": b"m1", "state": b"complete" * 1000}, {"next_offset": 100})

real = store.fs

class Announced:
    # the real output stream, written 1 MiB at a time, announcing each chunk and pausing
    def __init__(self, path):
        self.name = path.rsplit("/", 1)[-1]
        self.inner = real.open_output_stream(path)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)
    def write(self, data):
        for start in range(0, len(data), 1 << 20):
            self.inner.write(data[start:start + (1 << 20)])
            self.inner.flush()
            print("wrote", self.name, start + (1 << 20), flush=True)
            time.sleep(0.05)

class AnnouncingFileSystem:
    def __getattr__(self, name):
        return getattr(real, name)
    def open_output_stream(self, path):
        return Announced(path)

store.fs = AnnouncingFileSystem()
store.save("k", {"model": b"m2", "state": b"x" * (64 << 20)}, {"next_offset": 200})
print("finished", flush=True)
"""


@pytest.mark.timeout(120)
def test_writer_killed_in_the_middle_of_a_blob_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    process = python(CRASHING_WRITER, str(tmp_path))
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(4)]
        # checkpoint 2's small blob is whole and its big blob is 3 MiB in: kill now
        assert lines == ["wrote model.bin 1048576"] + [f"wrote state.bin {n << 20}" for n in (1, 2, 3)], (
            lines, process.stderr.read() if process.poll() is not None else "")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    partial = tmp_path / "k" / seq_name(2)
    assert (partial / "model.bin").read_bytes() == b"m2"
    assert 3 << 20 <= (partial / "state.bin").stat().st_size < 64 << 20
    assert not (tmp_path / "k" / f"{seq_name(2)}.manifest.json").exists()

    store = CheckpointStore(str(tmp_path))
    latest = store.load_latest("k")
    assert latest is not None and latest.seq == 1 and latest.meta == {"next_offset": 100}
    assert latest.blobs == {"model": b"m1", "state": b"complete" * 1000}
    assert [(s.seq, s.reason) for s in latest.skipped] == [(2, "no manifest: its writer stopped before finishing")]
    assert store.skipped == 1
    # the next owner continues after the partial checkpoint and removes it
    assert store.save("k", {"state": b"new"}, {"next_offset": 300}).seq == 3
    assert files(tmp_path, "k") == [seq_name(1), f"{seq_name(1)}.manifest.json", seq_name(3),
                                    f"{seq_name(3)}.manifest.json"]
    assert store.load_latest("k").meta == {"next_offset": 300}  # type: ignore[union-attr]


def test_a_refused_read_is_raised_not_skipped() -> None:
    """Only damaged checkpoints are passed over: an I/O error other than "not found" propagates, so a
    partition is never restored empty, or from an older checkpoint, because the store did not answer."""
    child = """
import sys
from connectors.checkpoint import CheckpointStore
store = CheckpointStore(sys.argv[1])
try:
    store.load_latest("k")
except OSError as exc:
    print(type(exc).__name__, store.skipped)
"""
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        store = CheckpointStore(top)
        for n in range(2):
            store.save("k", {"x": b"v%d" % n}, {"n": n})
        os.chmod(Path(top) / "k" / seq_name(2) / "x.bin", 0)
        process = unprivileged(child, top)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.split() == ["PermissionError", "0"]


def test_namespaces_keep_clusters_apart(tmp_path) -> None:
    first = CheckpointStore(str(tmp_path), namespace="cluster-a")
    first.save("transactions-0", {"state": b"a"}, {"next_offset": 5})
    second = CheckpointStore(str(tmp_path), namespace="cluster-b")
    assert second.load_latest("transactions-0") is None
    assert second.other_namespaces == ["cluster-a"]
    assert CheckpointStore(str(tmp_path), namespace="cluster-a").load_latest("transactions-0").meta == {"next_offset": 5}
    with pytest.raises(ValueError, match="namespace"):
        CheckpointStore(str(tmp_path), namespace="../escape")
