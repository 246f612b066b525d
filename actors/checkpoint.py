"""Per-partition checkpoints on any pyarrow.fs filesystem: atomic, verified, pruned.

Layout under the root URI (a local directory by default, ``s3://bucket/prefix``
in production)::

    <key>/<seq:012d>/<blob name>.bin       the blobs, written first
    <key>/<seq:012d>.manifest.json         written last, as one object

A checkpoint exists only once its manifest does: on a local disk the manifest
is written to a temporary name and moved into place; on an object store a
single PUT is atomic. The manifest lists every blob with its size and CRC-32;
:meth:`CheckpointStore.load_latest` returns the newest checkpoint whose blobs
all verify and skips (and counts) the others, so a writer killed halfway, or a
corrupted file, is never loaded. Sequence numbers grow per key across
processes (the next one follows what is stored); each key has one writer at a
time (its partition's owner). After a save the newest ``keep`` complete
checkpoints are kept; older ones and leftovers of incomplete ones older than
the newest complete checkpoint are deleted.

>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
>>> for offset in (10, 20, 30):
...     _ = store.save("transactions-0", {"state": b"x" * offset}, {"next_offset": offset})
>>> latest = store.load_latest("transactions-0")
>>> latest.seq, latest.meta["next_offset"], len(latest.blobs["state"]), [r.seq for r in store.list("transactions-0")]
(3, 30, 30, [2, 3])
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from configs import ConfigError

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class CheckpointRef:
    """Where a complete checkpoint lives."""

    key: str
    seq: int
    created_ms: int


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint."""

    ref: CheckpointRef
    meta: dict[str, Any]
    blobs: dict[str, bytes]
    #: Newer checkpoints of the key that were skipped because they were incomplete or corrupt.
    skipped: list[str] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return self.ref.seq

    @property
    def created_ms(self) -> int:
        return self.ref.created_ms


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        path = Path(uri).expanduser().resolve()
        return pafs.LocalFileSystem(), str(path)
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"config error: stream.checkpoint_uri: cannot open {uri!r} ({exc}); use a local directory, "
            "file:///abs/path or s3://bucket/prefix with credentials in the environment"
        ) from None
    return filesystem, root.rstrip("/")


class CheckpointStore:
    """Checkpoints of many keys (one per partition) under one root URI."""

    def __init__(self, uri: str, keep: int = 3) -> None:
        self.uri = uri
        self.keep = keep
        self.fs, self.root = _filesystem(uri)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        #: Incomplete or corrupt checkpoints load_latest passed over (all keys).
        self.skipped = 0
        try:
            self.fs.create_dir(self.root, recursive=True)
        except OSError as exc:
            raise ConfigError(
                f"config error: stream.checkpoint_uri: cannot create {uri!r} ({exc}); "
                "point it at a writable directory or bucket"
            ) from None

    def _dir(self, key: str) -> str:
        return f"{self.root}/{key}"

    def keys(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def _entries(self, key: str) -> tuple[dict[int, str], set[int]]:
        """(seq -> manifest path, seqs that have a blob directory)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._dir(key), allow_not_found=True))
        manifests: dict[int, str] = {}
        directories: set[int] = set()
        for info in infos:
            name = info.base_name
            if info.type == pafs.FileType.File and name.endswith(MANIFEST_SUFFIX) and name[:12].isdigit():
                manifests[int(name[:12])] = info.path
            elif info.type == pafs.FileType.Directory and name.isdigit():
                directories.add(int(name))
        return manifests, directories

    def list(self, key: str) -> list[CheckpointRef]:
        """Checkpoints with a manifest, oldest first (not verified: see load_latest)."""
        refs = []
        for seq, path in sorted(self._entries(key)[0].items()):
            manifest = self._read_manifest(path)
            if manifest is not None:
                refs.append(CheckpointRef(key, seq, int(manifest["created_ms"])))
        return refs

    def save(self, key: str, blobs: dict[str, bytes], meta: dict[str, Any]) -> CheckpointRef:
        """Write a checkpoint (blobs, then the manifest) and prune old ones."""
        manifests, directories = self._entries(key)
        seq = max([0, *manifests, *directories]) + 1
        directory = f"{self._dir(key)}/{seq:012d}"
        self.fs.create_dir(directory, recursive=True)
        listing = {}
        for name, data in blobs.items():
            file_name = f"{name}.bin"
            with self.fs.open_output_stream(f"{directory}/{file_name}") as out:
                out.write(data)
            listing[name] = {"file": file_name, "size": len(data), "crc32": zlib.crc32(data)}
        created_ms = int(time.time() * 1000)
        manifest = json.dumps({"seq": seq, "created_ms": created_ms, "meta": meta, "blobs": listing}).encode()
        target = f"{self._dir(key)}/{seq:012d}{MANIFEST_SUFFIX}"
        if self._local:
            temp = f"{self._dir(key)}/.{seq:012d}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(temp) as out:
                out.write(manifest)
                out.flush()
            os.replace(temp, target)
        else:
            with self.fs.open_output_stream(target) as out:
                out.write(manifest)
        self._prune(key, seq)
        return CheckpointRef(key, seq, created_ms)

    def _prune(self, key: str, newest: int) -> None:
        manifests, directories = self._entries(key)
        complete = sorted(manifests)
        for seq in complete[: -self.keep]:
            self.fs.delete_file(manifests[seq])
            if seq in directories:
                self.fs.delete_dir(f"{self._dir(key)}/{seq:012d}")
        for seq in directories - set(manifests):
            if seq < newest:  # an incomplete leftover of an earlier writer
                self.fs.delete_dir(f"{self._dir(key)}/{seq:012d}")

    def _read_manifest(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                manifest = json.loads(stream.read())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) and "blobs" in manifest else None

    def load_latest(self, key: str) -> Checkpoint | None:
        """The newest checkpoint whose blobs all verify; newer broken ones are skipped and counted."""
        manifests, directories = self._entries(key)
        skipped: list[str] = []
        newest_complete = max(manifests, default=0)
        skipped += [f"{seq:012d}: no manifest (writer stopped)" for seq in sorted(directories) if seq > newest_complete]
        for seq in sorted(manifests, reverse=True):
            manifest = self._read_manifest(manifests[seq])
            problem = "unreadable manifest" if manifest is None else None
            blobs: dict[str, bytes] = {}
            if manifest is not None:
                for name, entry in manifest["blobs"].items():
                    try:
                        with self.fs.open_input_stream(f"{self._dir(key)}/{seq:012d}/{entry['file']}") as stream:
                            data = stream.read()
                    except OSError:
                        problem = f"blob {name} missing"
                        break
                    if len(data) != entry["size"] or zlib.crc32(data) != entry["crc32"]:
                        problem = f"blob {name} corrupt"
                        break
                    blobs[name] = data
            if problem is None and manifest is not None:
                self.skipped += len(skipped)
                return Checkpoint(CheckpointRef(key, seq, int(manifest["created_ms"])), manifest["meta"], blobs, skipped)
            skipped.append(f"{seq:012d}: {problem}")
        self.skipped += len(skipped)
        return None
