"""Index recipes (``index_recipes/NAME.yaml``): one per index kind and encoder, independent of the dataset.

A recipe says what index to build and, for a learned one, what to encode with which settings::

    # index_recipes/splade-tiny.yaml
    kind: impact                 # bm25 | impact | seismic | faiss | milvus
    encoder: splade-tiny         # an encoder spec (encoders/*.yaml), model folder or hub id
    encode: {weights: float}     # contract settings (EncodeSettings): weights, quantize, fields, docs_as_queries

``bm25`` takes ``fields`` (flat | multifield); ``impact`` ``encoder``, ``encode``, ``max_length``, ``tokenizer``
and ``optimize``; ``faiss`` ``encoder``, ``max_length``, ``index_type`` (flat | hnsw), ``hnsw_m``,
``ef_construction``, ``ef_search``; ``seismic`` names the impact recipe whose encoding it indexes (``base``) and
Seismic's ``build`` knobs; ``milvus`` a ``base`` (impact or faiss recipe), ``milvus_index`` and ``uri``. Any other
key is an error naming the file. Batch size, device, dtype and threads are not in a recipe: they change speed,
not the index, and come from the command line (or a reproduction recipe's variables).

Two readers share one recipe, so each encode and index command is written once:

- ``python -m laconic_pyserini.index --recipe index_recipes/NAME.yaml --dataset D`` builds it in-process
  (:mod:`laconic_pyserini.index.recipe_build`);
- a condition of ``eval/*.yaml`` names it (``index: NAME``) and :func:`recipe_steps` renders the commands its
  cells run (``${data}``, ``${batch_size}``, ``${device}``, ``${dtype}`` and ``${threads}`` filled by the
  reproduction recipe).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..encode.settings import EncodeSettings
from ..errors import LaconicError
from ..shipped import index_recipes_dir
from ..yaml_file import read_yaml_mapping
from .lucene import FIELDS

KINDS = ("bm25", "impact", "seismic", "faiss", "milvus")
FAISS_TYPES = ("flat", "hnsw")
DEFAULT_MILVUS_URI = "milvus://localhost:19530/${collection}"
_COMMON = {"name", "kind", "description"}
_KEYS = {
    "bm25": {"fields"},
    "impact": {"encoder", "encode", "max_length", "tokenizer", "optimize"},
    "faiss": {"encoder", "max_length", "index_type", "hnsw_m", "ef_construction", "ef_search"},
    "seismic": {"base", "build"},
    "milvus": {"base", "milvus_index", "uri"},
}
_BASE_KINDS = {"seismic": ("impact",), "milvus": ("impact", "faiss")}


class IndexRecipeError(LaconicError, ValueError):
    """An index recipe that cannot be used as written; the message names the file and the key."""


@dataclass(frozen=True)
class IndexRecipe:
    """One index recipe, checked. ``base`` is the loaded recipe a Seismic or Milvus index is built from."""

    path: Path
    name: str
    kind: str
    encoder: str | None = None
    fields: str = "flat"
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    spec: dict = field(default_factory=dict)      # load_spec options: max_length, tokenizer
    options: dict = field(default_factory=dict)   # the kind's build options (optimize, index_type, build, uri ...)
    base: "IndexRecipe | None" = None
    description: str = ""

    @property
    def source(self) -> "IndexRecipe":
        """The recipe that encodes (itself, or the base of a Seismic / Milvus recipe)."""
        return self.base if self.base is not None else self


def recipe_path(name: str, folder: Path | None = None) -> Path:
    """The file of the recipe called ``name`` (in ``folder``, default the shipped ones)."""
    return (folder or index_recipes_dir()) / f"{name}.yaml"


def load_index_recipe(path: str | os.PathLike) -> IndexRecipe:
    """Read and check one index recipe (and its base); any problem raises :class:`IndexRecipeError`."""
    path = Path(path)
    raw = read_yaml_mapping(path, IndexRecipeError, missing=f"the shipped index recipes are in {index_recipes_dir()}",
                            shape="index recipe keys (kind, encoder, ...)")
    if "conditions" in raw:
        raise IndexRecipeError(f"{path} is a reproduction recipe: name one of its conditions (--condition C), or an "
                               f"index recipe of {index_recipes_dir()}")
    name = str(raw.get("name") or path.stem)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise IndexRecipeError(f"{path}: kind {kind!r}: choose one of {', '.join(KINDS)}")
    unknown = sorted(set(raw) - _COMMON - _KEYS[kind])
    if unknown:
        raise IndexRecipeError(f"{path}: unknown key(s) {unknown} for a {kind} recipe; it takes "
                               f"{sorted(_COMMON | _KEYS[kind])}")
    common = {"path": path, "name": name, "kind": kind, "description": str(raw.get("description") or "")}
    if kind == "bm25":
        if raw.get("fields", "flat") not in FIELDS:
            raise IndexRecipeError(f"{path}: fields {raw.get('fields')!r}: choose one of {', '.join(FIELDS)}")
        return IndexRecipe(**common, fields=raw.get("fields", "flat"))
    if kind in _BASE_KINDS:
        return IndexRecipe(**common, base=_base(path, raw, kind), options=_base_options(path, raw, kind))
    if not isinstance(raw.get("encoder"), str) or not raw["encoder"]:
        raise IndexRecipeError(f"{path}: a {kind} recipe names its 'encoder' (a spec name, folder or hub id)")
    spec = {key: raw[key] for key in ("max_length", "tokenizer") if raw.get(key) is not None}
    _positive(path, spec, ("max_length",))
    if kind == "faiss":
        options = {key: raw[key] for key in ("index_type", "hnsw_m", "ef_construction", "ef_search") if key in raw}
        if options.get("index_type", "flat") not in FAISS_TYPES:
            raise IndexRecipeError(f"{path}: index_type {options['index_type']!r}: choose flat or hnsw")
        _positive(path, options, ("hnsw_m", "ef_construction", "ef_search"))
        return IndexRecipe(**common, encoder=raw["encoder"], spec=spec, options=options)
    return IndexRecipe(**common, encoder=raw["encoder"], spec=spec, encode=_encode_settings(path, raw.get("encode")),
                       options={"optimize": bool(raw.get("optimize", False))})


def _positive(path: Path, values: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise IndexRecipeError(f"{path}: {key} must be a positive integer, not {value!r}")


def _encode_settings(path: Path, raw) -> EncodeSettings:
    allowed = {"weights", "quantize", "fields", "docs_as_queries"}
    if raw is None:
        return EncodeSettings()
    if not isinstance(raw, dict) or set(raw) - allowed:
        raise IndexRecipeError(f"{path}: encode: a mapping of {sorted(allowed)}, not {raw!r}")
    try:
        return EncodeSettings(**raw)
    except (LaconicError, TypeError) as exc:
        raise IndexRecipeError(f"{path}: encode: {exc}") from None


def _base(path: Path, raw: dict, kind: str) -> IndexRecipe:
    name = raw.get("base")
    if not isinstance(name, str) or not name:
        raise IndexRecipeError(f"{path}: a {kind} recipe names its 'base': the {' or '.join(_BASE_KINDS[kind])} "
                               "recipe whose vectors it indexes")
    base = load_index_recipe(recipe_path(name, path.parent))
    if base.kind not in _BASE_KINDS[kind]:
        raise IndexRecipeError(f"{path}: base {name!r} is a {base.kind} recipe; a {kind} index is built from "
                               f"a {' or '.join(_BASE_KINDS[kind])} one")
    return base


def _base_options(path: Path, raw: dict, kind: str) -> dict:
    if kind == "seismic":
        from .seismic import BUILD_DEFAULTS

        build = raw.get("build") or {}
        if not isinstance(build, dict) or set(build) - set(BUILD_DEFAULTS):
            raise IndexRecipeError(f"{path}: build: Seismic's knobs, a mapping of {sorted(BUILD_DEFAULTS)}")
        return {"build": dict(build)}
    uri = raw.get("uri", DEFAULT_MILVUS_URI)
    if not isinstance(uri, str) or not uri.startswith("milvus"):
        raise IndexRecipeError(f"{path}: uri {uri!r}: a milvus:// address (${{collection}} is filled in)")
    return {"uri": uri, **({"milvus_index": str(raw["milvus_index"])} if raw.get("milvus_index") else {})}


# ------------------------------------------------------------------------------------------------ commands


def recipe_steps(recipe: IndexRecipe, folder: str) -> list[tuple[str, str]]:
    """The ``(command template, skip_if_exists)`` steps that build ``recipe`` under ``folder`` (``vectors`` and
    ``index`` inside it), as a reproduction cell runs them. A Seismic index is built beside the impact index by
    its first search (``search --backend seismic``), so its steps are its base's."""
    index = f"{folder}/index"
    if recipe.kind == "bm25":
        return [(f"python -m laconic_pyserini.index --bm25 --input ${{data}} --index {index} --fields "
                 f"{recipe.fields} --threads ${{threads}}", index)]
    if recipe.kind in _BASE_KINDS:
        steps = recipe_steps(recipe.source, folder)
        if recipe.kind == "milvus":
            source = index if recipe.source.kind == "faiss" else f"{folder}/vectors"
            extra = f" --milvus-index {recipe.options['milvus_index']}" if "milvus_index" in recipe.options else ""
            steps.append((f"python -m laconic_pyserini.index --input {source} --index {recipe.options['uri']}{extra}",
                          None))
        return steps
    spec = "".join(f" --{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in recipe.spec.items())
    runtime = "--batch-size ${batch_size} --device ${device} --dtype ${dtype}"
    if recipe.kind == "faiss":
        options = "".join(f" --{key.replace('_', '-')} {value}" for key, value in recipe.options.items())
        return [(f"python -m laconic_pyserini.encode.dense --corpus ${{data}} --encoder {shlex.quote(recipe.encoder)} "
                 f"--output {index}{options or ' --index-type flat'}{spec} {runtime}", index)]
    return [(f"python -m laconic_pyserini.encode --corpus ${{data}} --embeddings {folder}/vectors --encoder "
             f"{shlex.quote(recipe.encoder)}{spec}{encode_flags(recipe.encode)} {runtime}", index),
            (f"python -m laconic_pyserini.index --input {folder}/vectors --index {index} --threads ${{threads}}"
             + (" --optimize" if recipe.options.get("optimize") else ""), index)]


def encode_flags(settings: EncodeSettings) -> str:
    """The encode CLI's options for the settings that differ from its defaults (a leading space each)."""
    default, flags = EncodeSettings(), []
    if settings.weights != default.weights:
        flags.append(f"--weights {settings.weights}")
    if settings.quantize != default.quantize:
        flags.append(f"--quantize {settings.quantize}")
    if settings.fields != default.fields:
        flags.append("--fields " + " ".join(settings.fields))
    if settings.docs_as_queries is not None:
        flags.append("--docs-as-queries" if settings.docs_as_queries else "--no-docs-as-queries")
    return "".join(f" {flag}" for flag in flags)
