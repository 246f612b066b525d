"""Per-partition checkpoints on any pyarrow.fs filesystem: atomic, verified, pruned.

One :class:`CheckpointStore` holds the checkpoints of many keys (one key per
Kafka partition, e.g. ``transactions-3``) under a root URI: a local directory
by default (a relative path resolves against the current directory),
``file:///abs/path``, or ``s3://bucket/prefix`` (also ``gs://``, ``hdfs://``)
in production. Layout::

    <root>/<key>/<seq:012d>/<blob name>.bin     the blobs, written first
    <root>/<key>/<seq:012d>.manifest.json       written last, as one object

A checkpoint exists once its manifest does. On a local disk the manifest is
written to a temporary name and renamed into place; on an object store it is
one PUT, which is atomic (no rename is ever relied on there). The manifest
records the sequence number, creation time, the caller's ``meta`` and each
blob's file, size and CRC-32; :meth:`CheckpointStore.load_latest` returns the
newest checkpoint whose blobs all verify and passes over newer ones that do not
(a writer killed halfway, a truncated or corrupt file), recording each as a
:class:`Skipped`; any other I/O error is raised. Sequence numbers grow per key, also across processes: the
next one follows everything stored. Each key has one writer at a time (its
partition's owner); different keys may be written concurrently.

Retention, after each successful save: the newest ``keep`` complete checkpoints
stay; older complete ones, incomplete leftovers older than the one just saved,
checkpoints this store found broken, and stray temporary manifests are deleted
(a manifest before its blobs, so a half-deleted checkpoint is never complete).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as root:
...     store = CheckpointStore(root, keep=2)
...     for offset in (10, 20, 30):
...         _ = store.save("transactions-0", {"state": b"x" * offset}, {"next_offset": offset})
...     latest = store.load_latest("transactions-0")
...     print(latest.seq, latest.meta, len(latest.blobs["state"]), [ref.seq for ref in store.list("transactions-0")])
3 {'next_offset': 30} 30 [2, 3]
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pyarrow as pa
import pyarrow.fs as pafs

from configs import ConfigError

#: Manifest layout version; a manifest of a newer format is skipped, not misread.
FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
_TEMP_SUFFIX = ".tmp"
_SEQ_DIGITS = 12
#: Keys and blob names become path components: Kafka topic characters, no leading dot.
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


class BlobEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One blob of a checkpoint as its manifest records it."""

    file: Annotated[str, msgspec.Meta(pattern=_NAME.pattern)]
    size: Annotated[int, msgspec.Meta(ge=0)]
    crc32: Annotated[int, msgspec.Meta(ge=0)]


class Manifest(msgspec.Struct, frozen=True):
    """A checkpoint's manifest: written last, so the checkpoint exists once it does.

    Unknown fields are ignored (a newer writer may add some: ``format`` says whether this code can read it).
    """

    seq: int
    created_ms: int
    meta: dict[str, Any]
    blobs: dict[str, BlobEntry]
    format: int = FORMAT
    key: str | None = None  # absent in the first manifests written


_MANIFEST_DECODER = msgspec.json.Decoder(Manifest)


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint: its key, sequence number and creation time (epoch ms)."""

    key: str
    seq: int
    created_ms: int


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint :meth:`CheckpointStore.load_latest` passed over, and why."""

    key: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"{self.key} checkpoint {self.seq}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint whose blobs all matched their manifest."""

    ref: CheckpointRef
    #: The ``meta`` given to save, as JSON returns it (tuples become lists).
    meta: dict[str, Any]
    #: Blob name -> bytes.
    blobs: dict[str, bytes]
    #: Newer checkpoints of this key that were incomplete or corrupt, newest first.
    skipped: tuple[Skipped, ...] = ()

    @property
    def seq(self) -> int:
        return self.ref.seq

    @property
    def created_ms(self) -> int:
        return self.ref.created_ms


@dataclasses.dataclass(frozen=True)
class _Listing:
    """What is stored under one key."""

    manifests: dict[int, str]  # seq -> manifest path
    blob_dirs: set[int]
    temps: list[str]  # temporary manifests a killed local writer left


class CheckpointStore:
    """Checkpoints of many keys under one root URI.

    The constructor creates the root and writes (then deletes) a probe object,
    so an unusable URI fails at start-up with a one-line :class:`ConfigError`.
    """

    def __init__(self, uri: str, keep: int = 3, namespace: str | None = None) -> None:
        """``namespace``: a sub-folder of the root holding every key (the scoring job
        uses one per Kafka cluster, see :func:`cluster_namespace`)."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep} (stream.checkpoint_keep)")
        self.uri = uri
        self.keep = keep
        self.fs, self.root = _open_root(uri)
        #: The other namespaces found beside this one (what another Kafka cluster left).
        self.other_namespaces: list[str] = []
        if namespace is not None:
            base = self.root
            self.root = f"{base}/{_checked('namespace', namespace)}"
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            self.other_namespaces = sorted(
                i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name != namespace
            )
        self._rename_manifests = isinstance(self.fs, pafs.LocalFileSystem)
        #: Checkpoints passed over by load_latest, all keys, since this store was made.
        self.skipped = 0
        #: What the last load_latest of each key passed over (kept also when it found nothing).
        self.last_skipped: dict[str, tuple[Skipped, ...]] = {}
        self._broken: dict[str, set[int]] = {}

    def keys(self) -> list[str]:
        """Keys with anything stored, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and _NAME.match(i.base_name))

    def list(self, key: str) -> list[CheckpointRef]:
        """Checkpoints of ``key`` with a readable manifest, oldest first (blobs are verified by load_latest)."""
        refs = []
        for seq, path in sorted(self._listing(_checked("key", key)).manifests.items()):
            manifest = self._read_manifest(key, seq, path)
            if isinstance(manifest, Manifest):
                refs.append(CheckpointRef(key, seq, manifest.created_ms))
        return refs

    def save(self, key: str, blobs: Mapping[str, bytes], meta: dict[str, Any]) -> CheckpointRef:
        """Write the blobs, then the manifest, then prune; returns the new checkpoint.

        ``meta`` must be JSON-serialisable (checked before anything is written).
        """
        _checked("key", key)
        for name in blobs:
            _checked("blob name", name)
        json.dumps(meta)  # a TypeError here leaves nothing behind
        listing = self._listing(key)
        seq = max([0, *listing.manifests, *listing.blob_dirs]) + 1
        blob_dir = self._path(key, f"{seq:0{_SEQ_DIGITS}d}")
        self.fs.create_dir(blob_dir, recursive=True)
        entries = {}
        for name, data in blobs.items():
            file_name = f"{name}.bin"
            with self.fs.open_output_stream(f"{blob_dir}/{file_name}") as out:
                out.write(data)
            entries[name] = BlobEntry(file_name, memoryview(data).nbytes, zlib.crc32(data))
        created_ms = time.time_ns() // 1_000_000
        manifest = Manifest(seq, created_ms, meta, entries, FORMAT, key)
        self._put_whole(self._path(key, f"{seq:0{_SEQ_DIGITS}d}{MANIFEST_SUFFIX}"), msgspec.json.encode(manifest))
        self._prune(key, seq)
        return CheckpointRef(key, seq, created_ms)

    def load_latest(self, key: str) -> Checkpoint | None:
        """The newest checkpoint of ``key`` whose blobs all verify, or None.

        Newer checkpoints that are incomplete or corrupt are passed over, never
        raised: they are listed in ``Checkpoint.skipped`` and
        ``last_skipped[key]`` and counted in ``skipped``. Other I/O errors (an
        unreachable store, a refused read) propagate: starting a partition
        empty because the store did not answer would lose its state.
        """
        listing = self._listing(_checked("key", key))
        newest_manifest = max(listing.manifests, default=0)
        skipped = [
            Skipped(key, seq, "no manifest: its writer stopped before finishing")
            for seq in sorted(listing.blob_dirs, reverse=True)
            if seq > newest_manifest
        ]
        found = None
        for seq in sorted(listing.manifests, reverse=True):
            result = self._load(key, seq, listing.manifests[seq])
            if isinstance(result, Checkpoint):
                found = result
                break
            skipped.append(Skipped(key, seq, result))
            self._broken.setdefault(key, set()).add(seq)
        self.skipped += len(skipped)
        self.last_skipped[key] = tuple(skipped)
        return None if found is None else dataclasses.replace(found, skipped=tuple(skipped))

    # ------------------------------------------------------------------ internals
    def _path(self, key: str, name: str = "") -> str:
        return f"{self.root}/{key}/{name}" if name else f"{self.root}/{key}"

    def _listing(self, key: str) -> _Listing:
        manifests: dict[int, str] = {}
        blob_dirs: set[int] = set()
        temps: list[str] = []
        for info in self.fs.get_file_info(pafs.FileSelector(self._path(key), allow_not_found=True)):
            name, is_file = info.base_name, info.type == pafs.FileType.File
            stem = name.removesuffix(MANIFEST_SUFFIX)
            if is_file and stem != name and _is_seq(stem):
                manifests[int(stem)] = info.path
            elif info.type == pafs.FileType.Directory and _is_seq(name):
                blob_dirs.add(int(name))
            elif is_file and name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                temps.append(info.path)
        return _Listing(manifests, blob_dirs, temps)

    def _put_whole(self, target: str, data: bytes) -> None:
        """Make ``target`` appear with all of ``data`` or not at all."""
        if not self._rename_manifests:  # an object store: one PUT is atomic
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return
        directory, _, name = target.rpartition("/")
        temp = f"{directory}/.{name}.{uuid.uuid4().hex}{_TEMP_SUFFIX}"
        with self.fs.open_output_stream(temp) as out:
            out.write(data)
        self.fs.move(temp, target)

    def _prune(self, key: str, newest: int) -> None:
        listing = self._listing(key)
        broken = self._broken.pop(key, set())
        complete = sorted(seq for seq in listing.manifests if seq not in broken)
        doomed = set(complete[: -self.keep]) | {seq for seq in broken if seq < newest}
        doomed |= {seq for seq in listing.blob_dirs - set(listing.manifests) if seq < newest}
        for seq in sorted(doomed):
            if seq in listing.manifests:
                self.fs.delete_file(listing.manifests[seq])
            if seq in listing.blob_dirs:
                self.fs.delete_dir(self._path(key, f"{seq:0{_SEQ_DIGITS}d}"))
        for temp in listing.temps:
            self.fs.delete_file(temp)

    def _read_manifest(self, key: str, seq: int, path: str) -> Manifest | str:
        """The manifest at ``path``, or why it cannot be used."""
        try:
            with self.fs.open_input_stream(path) as stream:
                manifest = _MANIFEST_DECODER.decode(stream.read())
        except msgspec.ValidationError:
            return "malformed manifest"
        except (FileNotFoundError, msgspec.DecodeError) as exc:
            return f"unreadable manifest ({_one_line(exc)})"
        if manifest.format > FORMAT:
            return f"manifest format {manifest.format} is newer than this code reads ({FORMAT})"
        named = manifest.key if manifest.key is not None else key
        if manifest.seq != seq or named != key:
            return f"manifest names {named} checkpoint {manifest.seq}"
        return manifest

    def _load(self, key: str, seq: int, manifest_path: str) -> Checkpoint | str:
        """The verified checkpoint, or why it is not usable."""
        manifest = self._read_manifest(key, seq, manifest_path)
        if isinstance(manifest, str):
            return manifest
        blobs = {}
        for name, entry in manifest.blobs.items():
            try:
                with self.fs.open_input_stream(self._path(key, f"{seq:0{_SEQ_DIGITS}d}/{entry.file}")) as stream:
                    data = stream.read(entry.size + 1)  # one byte more reveals an over-long file
            except FileNotFoundError:
                return f"blob {name} missing"
            if len(data) < entry.size:
                return f"blob {name} truncated: {len(data)} of {entry.size} bytes"
            if len(data) > entry.size:
                return f"blob {name} longer than the {entry.size} bytes its manifest records"
            if zlib.crc32(data) != entry.crc32:
                return f"blob {name} fails its checksum"
            blobs[name] = data
        return Checkpoint(CheckpointRef(key, seq, manifest.created_ms), manifest.meta, blobs)


def _open_root(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a checkpoint URI, created and proven writable; ConfigError otherwise."""
    fix = "use a local directory, file:///abs/path or s3://bucket/prefix (gs://, hdfs://)"
    if not uri.strip():
        raise ConfigError(f"config error: stream.checkpoint_uri is empty; {fix}")
    if "://" not in uri:
        filesystem: pafs.FileSystem = pafs.LocalFileSystem()
        root = Path(uri).expanduser().resolve().as_posix()
    else:
        try:
            filesystem, root = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigError(
                f"config error: stream.checkpoint_uri: cannot open {uri!r} ({_one_line(exc)}); {fix}"
            ) from None
    root = root.rstrip("/")
    if not root:
        raise ConfigError(f"config error: stream.checkpoint_uri: {uri!r} names no directory or bucket; {fix}")
    probe = f"{root}/.write-probe-{uuid.uuid4().hex}"
    try:
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(probe) as out:
            out.write(b"")
        filesystem.delete_file(probe)
    except OSError as exc:
        raise ConfigError(
            f"config error: stream.checkpoint_uri: cannot write to {uri!r} ({_one_line(exc)}); point it at a "
            "writable directory or bucket (check its permissions or the credentials in the environment)"
        ) from None
    return filesystem, root


def cluster_namespace(cluster_id: str | None) -> str:
    """The checkpoint namespace of a Kafka cluster: offsets mean something only in their cluster.

    >>> cluster_namespace("MkU3OEVBNTcwNTJENDM2Qk"), cluster_namespace(None), cluster_namespace("a/b c")
    ('cluster-MkU3OEVBNTcwNTJENDM2Qk', 'cluster-unknown', 'cluster-a_b_c')
    """
    return "cluster-" + (re.sub(r"[^A-Za-z0-9._-]", "_", cluster_id) if cluster_id else "unknown")


def _checked(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"checkpoint {what} {name!r}: use letters, digits, '.', '_' and '-' (not first: '.')")
    return name


def _is_seq(name: str) -> bool:
    return len(name) == _SEQ_DIGITS and name.isdigit()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
