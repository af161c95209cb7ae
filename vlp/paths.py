"""Where named assets live: `bundled:NAME` (the repository's `tokenizers/NAME`), `package:MODULE/SUBDIR`
(files a Python package ships), else the string itself (a hub id or a local path)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_TOKENIZERS = REPO_ROOT / "tokenizers"


def resolve_location(spec: str | None) -> str | None:
    if spec is None:
        return None
    if spec.startswith("bundled:"):
        path = BUNDLED_TOKENIZERS / spec.split(":", 1)[1]
        if not path.is_dir():
            raise FileNotFoundError(f"bundled asset {spec!r} not found at {path}; vlp's bundled tokenizers live in "
                                    "the repository's tokenizers/ folder (install vlp from its repository)")
        return str(path)
    if spec.startswith("package:"):
        module, _, sub = spec.split(":", 1)[1].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"{spec!r}: the Python package {module!r} is not installed; install it with "
                                    f"`{sys.executable} -m pip install {module.replace('_', '-')}`")
        return str(Path(list(found.submodule_search_locations)[0]) / sub)
    return spec
