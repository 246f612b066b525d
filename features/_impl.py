"""Which implementation of the feature kernel runs: compiled (mypyc) or pure Python.

Both come from the same source files; the compiled copies are used only when
they were built from the current sources (CRC match), so an edit is never
shadowed by a stale build. ``FRAUDSTREAM_PURE_PYTHON=1`` forces pure Python.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import warnings
import zlib
from pathlib import Path
from types import ModuleType

from features.ckernel import CEventWindow, CRecentDistinct

_MODULES = ("windows", "stats", "geo", "novelty", "terminal", "engine")


def _compiled_modules() -> dict[str, ModuleType] | None:
    if os.environ.get("FRAUDSTREAM_PURE_PYTHON"):
        return None
    try:
        native = importlib.import_module("features._native")
    except ImportError:
        return None
    here = Path(__file__).resolve().parent
    recorded: dict[str, int] = getattr(native, "SOURCE_CRC32", {})
    for name in _MODULES:
        current = zlib.crc32((here / f"{name}.py").read_bytes())
        if recorded.get(name) != current:
            warnings.warn(
                f"features/{name}.py changed since the compiled kernel was built; running pure Python "
                "(rebuild with `pip install -e .` for full speed)",
                stacklevel=3,
            )
            return None
    modules = {}
    for name in _MODULES:
        try:
            module = importlib.import_module(f"features._native.{name}")
        except ImportError:
            return None
        if not str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            return None
        modules[name] = module
    return modules


def _pure_modules() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"features.{name}") for name in _MODULES}


_compiled = _compiled_modules()
#: True when the mypyc-compiled kernel is in use.
COMPILED = _compiled is not None
_selected = _compiled if _compiled is not None else _pure_modules()

#: The window engines create (features/ckernel.py): the C twin when built, else the kernel's.
EventWindow = CEventWindow if CRecentDistinct is not None else _selected["windows"].EventWindow
RunningStats = _selected["stats"].RunningStats
LocationTrail = _selected["geo"].LocationTrail
NoveltyFilter = _selected["novelty"].NoveltyFilter
RecentDistinct = CRecentDistinct if CEventWindow is not None else _selected["novelty"].RecentDistinct
TerminalRisk = _selected["terminal"].TerminalRisk
PendingLabels = _selected["terminal"].PendingLabels
AccountState = _selected["engine"].AccountState
EngineStats = _selected["engine"].EngineStats
FeatureBatch = _selected["engine"].FeatureBatch
FeatureEngine = _selected["engine"].FeatureEngine
