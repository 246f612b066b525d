"""Which per-account containers the engines use: the C twins (features/_ckernel.c) when built and current.

``features/windows.py`` (EventWindow) and ``features/novelty.py``
(RecentDistinct) define them; ``features/_ckernel.c`` holds the same
structures over contiguous int64/float64/uint32 arrays, which is where much of
the per-event cost went in the compiled kernel (each boxed int or float in a
Python list is a pointer to chase). setup.py builds it as an optional
extension, recording the CRC-32 of the C source it was built from; it is used
only when that matches the current file, so an edited source is never shadowed
by a stale build. ``FRAUDSTREAM_PURE_PYTHON=1`` forces the Python window.
"""

from __future__ import annotations

import importlib
import os
import warnings
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

SOURCE = Path(__file__).resolve().parent / "_ckernel.c"


def _load() -> ModuleType | None:
    if os.environ.get("FRAUDSTREAM_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module("features._ckernel")
    except ImportError:
        return None
    # an installed wheel may not ship the source: then the build is the one that was installed
    if SOURCE.exists() and getattr(module, "SOURCE_CRC32", None) != zlib.crc32(SOURCE.read_bytes()):
        warnings.warn(
            "features/_ckernel.c changed since it was built; using the Python window "
            "(rebuild with `pip install -e .` for full speed)",
            stacklevel=3,
        )
        return None
    return module


_module = _load()
#: The C EventWindow and RecentDistinct classes, or None when not built (or stale, or disabled).
CEventWindow: Any = getattr(_module, "EventWindow", None)
CRecentDistinct: Any = getattr(_module, "RecentDistinct", None)
