"""mel: offline, batch, multilingual entity linking with dense retrieval.

The Python API (README, "Use mel from Python"): `mel.Linker.open(index).link(records)`,
`mel.load_model().embed(texts)`, `mel.open_index(path).search(vectors, k)`. It is imported
on first use, so `import mel` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Index", "LinkOptions", "LinkStats", "Linker", "LinkerSettings", "Model", "SearchResult", "__version__",
           "load_model", "open_index"]
_API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from mel.api import (
        Index,
        Linker,
        LinkerSettings,
        LinkOptions,
        LinkStats,
        Model,
        SearchResult,
        load_model,
        open_index,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        from mel import api

        return getattr(api, name)
    raise AttributeError(f"module 'mel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
