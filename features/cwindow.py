"""Which EventWindow the engines use: the C twin (features/_cwindow.c) when it is built and current.

``features/windows.py`` defines the window; ``features/_cwindow.c`` is the same
structure over contiguous int64/float64 arrays, which is where the per-event
cost of the windows went in the compiled kernel (each boxed int or float in a
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
from typing import Any

SOURCE = Path(__file__).resolve().parent / "_cwindow.c"


def _load() -> Any:
    if os.environ.get("FRAUDSTREAM_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module("features._cwindow")
    except ImportError:
        return None
    # an installed wheel may not ship the source: then the build is the one that was installed
    if SOURCE.exists() and getattr(module, "SOURCE_CRC32", None) != zlib.crc32(SOURCE.read_bytes()):
        warnings.warn(
            "features/_cwindow.c changed since it was built; using the Python window "
            "(rebuild with `pip install -e .` for full speed)",
            stacklevel=3,
        )
        return None
    return module.EventWindow


#: The C EventWindow class, or None when it is not built (or stale, or disabled).
CEventWindow: Any = _load()
