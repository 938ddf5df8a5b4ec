"""Where the YAML files this package ships live: encoder specs (``encoders/``), reproduction recipes (``eval/``) and
index recipes (``index_recipes/``).

The checkout keeps them at its top, where users look for them. A wheel carries the same folders inside the
package as ``laconic_pyserini/encoders/``, ``laconic_pyserini/recipes/`` and ``laconic_pyserini/index_recipes/`` (``setup.py`` maps the top-level
folders there at build time: one copy in git). Lookup tries the checkout first, then the installed package, so an
editable install, a checkout on ``PYTHONPATH`` and a wheel installed anywhere all find them.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: shipped folder -> (the checkout's top-level folder, the folder inside an installed package)
_FOLDERS = {"encoders": ("encoders", "encoders"), "recipes": ("eval", "recipes"),
            "index_recipes": ("index_recipes", "index_recipes")}


def _shipped(kind: str) -> Path:
    top, packaged = _FOLDERS[kind]
    for candidate in (_HERE.parent / top, _HERE / packaged):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return _HERE.parent / top


def encoders_dir() -> Path:
    """The folder of shipped encoder specs (``*.yaml``)."""
    return _shipped("encoders")


def recipes_dir() -> Path:
    """The folder of shipped reproduction recipes (``*.yaml``)."""
    return _shipped("recipes")


def index_recipes_dir() -> Path:
    """The folder of shipped index recipes (``*.yaml``)."""
    return _shipped("index_recipes")


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes (``beir``, ``mteb-retrieval``)."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe file: an existing path as given, else a shipped recipe by name (``beir`` or ``beir.yaml``); a
    path that names neither is returned unchanged, for the reader's error."""
    path = Path(name_or_path)
    if path.exists() or len(path.parts) > 1:
        return path
    shipped = recipes_dir() / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path
