"""Checkpoint store: atomic, verified, pruned; a writer killed mid-write is never loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors.checkpoint import CheckpointStore
from configs import ConfigError


def test_round_trip_and_sequence_continue_across_store_instances(tmp_path: Path) -> None:
    first = CheckpointStore(str(tmp_path), keep=5)
    first.save("t-0", {"a": b"one", "b": b""}, {"next_offset": 1})
    second = CheckpointStore(f"file://{tmp_path}", keep=5)  # same place, as a URI
    ref = second.save("t-0", {"a": b"two"}, {"next_offset": 2})
    assert ref.seq == 2
    latest = first.load_latest("t-0")
    assert latest is not None and latest.seq == 2 and latest.blobs == {"a": b"two"} and latest.meta == {"next_offset": 2}
    assert first.keys() == ["t-0"] and first.load_latest("t-1") is None


def test_relative_path_resolves_against_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    CheckpointStore("ckpt").save("k", {"x": b"1"}, {})
    assert (tmp_path / "ckpt" / "k" / f"{1:012d}.manifest.json").is_file()


def test_retention_keeps_the_newest(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=2)
    for i in range(5):
        store.save("k", {"x": bytes([i])}, {"i": i})
    assert [r.seq for r in store.list("k")] == [4, 5]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        f"{4:012d}", f"{4:012d}.manifest.json", f"{5:012d}", f"{5:012d}.manifest.json"]


def test_corrupt_or_missing_blob_falls_back_and_is_counted(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), keep=5)
    for i in range(3):
        store.save("k", {"x": b"v%d" % i}, {"i": i})
    (tmp_path / "k" / f"{3:012d}" / "x.bin").write_bytes(b"v9")  # same size, other bytes
    (tmp_path / "k" / f"{2:012d}" / "x.bin").unlink()
    latest = store.load_latest("k")
    assert latest is not None and latest.meta == {"i": 0}
    assert len(latest.skipped) == 2 and store.skipped == 2
    assert "corrupt" in latest.skipped[0] and "missing" in latest.skipped[1]


def test_bad_uri_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stream.checkpoint_uri"):
        CheckpointStore("nosuchscheme://bucket/x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="stream.checkpoint_uri"):
        CheckpointStore(str(blocker / "sub"))


def test_writer_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    child = """
import sys, time
from actors.checkpoint import CheckpointStore
store = CheckpointStore(sys.argv[1])
store.save("k", {"state": b"complete" * 1000}, {"next_offset": 100})
real = store.fs
class Slow:
    def __init__(self, inner):
        self.inner = inner
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)
    def write(self, data):
        step = 1 << 20
        for i in range(0, len(data), step):
            self.inner.write(data[i:i + step])
            print("writing", flush=True)
            time.sleep(0.05)
    def flush(self):
        self.inner.flush()
class SlowFS:
    def __getattr__(self, name):
        return getattr(real, name)
    def open_output_stream(self, path):
        return Slow(real.open_output_stream(path))
store.fs = SlowFS()
store.save("k", {"state": b"x" * (64 << 20)}, {"next_offset": 200})
print("finished", flush=True)
"""
    process = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    assert process.stdout is not None
    for _ in range(3):  # the big blob is being written
        assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    partial = tmp_path / "k" / f"{2:012d}" / "state.bin"
    assert partial.is_file() and 0 < partial.stat().st_size < 64 << 20
    store = CheckpointStore(str(tmp_path))
    latest = store.load_latest("k")
    assert latest is not None and latest.seq == 1 and latest.meta == {"next_offset": 100}
    assert latest.skipped and "no manifest" in latest.skipped[0]
    # the next writer continues after the partial one and removes it
    assert store.save("k", {"state": b"new"}, {"next_offset": 300}).seq == 3
    assert not (tmp_path / "k" / f"{2:012d}").exists()
    assert store.load_latest("k").meta == {"next_offset": 300}
