"""Scorer checkpoints as bytes: a JSON header and raw little-endian arrays, no pickle.

Loading runs no code from the checkpoint (a pickle from a shared bucket could),
and the same state always gives the same bytes.

>>> import numpy as np
>>> blob = pack({"format": 1}, {"anomaly.r_mass": np.arange(3, dtype=np.int32)})
>>> meta, arrays = unpack(blob)
>>> meta, arrays["anomaly.r_mass"].tolist()
({'format': 1}, [0, 1, 2])
>>> unpack(b"garbage")
Traceback (most recent call last):
...
ValueError: not a scorer state (it does not start with b'FSSCORE1'); pass the bytes Scorer.state_bytes() returned
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import numpy as np

MAGIC = b"FSSCORE1"
_LENGTH = struct.Struct("<Q")


def pack(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """``meta`` (JSON values) and named arrays as one byte string."""
    little = {name: np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for name, a in arrays.items()}
    header = msgspec.json.encode(
        {"meta": meta, "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in little.items()]}
    )
    return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *(a.tobytes() for a in little.values())])


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``meta`` and arrays :func:`pack` wrote; ValueError when the bytes are not such a state."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
        raise ValueError(
            f"not a scorer state (it does not start with {MAGIC!r}); pass the bytes Scorer.state_bytes() returned"
        )
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    try:
        header = msgspec.json.decode(data[start : start + length])
        position = start + length
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape in header["arrays"]:
            count = int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=position)
            arrays[name] = array.reshape(shape).copy()
            position += array.nbytes
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"scorer state is damaged ({exc}); start the partition without it") from None
    if position != len(data):
        raise ValueError(f"scorer state is damaged ({len(data) - position} bytes left over); start without it")
    return header["meta"], arrays
