"""Open an exported folder as a real ``sentence_transformers.SparseEncoder`` without sentence-transformers'
remote-code permission: :func:`open_sparse_encoder`.

Why not plain ``SparseEncoder(folder)`` for a LACONIC folder: sentence-transformers 6 resolves every
``modules.json`` type through ``sentence_transformers.util.misc.import_module_class``, which imports a class
directly only when its dotted path starts with ``sentence_transformers.``; for any other path it raises
``ValueError`` unless the caller sets ``trust_remote_code`` (the ``if not trust_remote_code:`` test in that
function, ST 6.2), even for a class of an installed package and a local folder. Its only other route,
``module_classes``, is reached through the private ``_load_with_module_classes`` that ST documents as "not a way
around the flag". No entry point, registry or path form exists, and ``SparseEncoder``'s own Transformer cannot run a
LACONIC model (no bidirectional switch for an unpadded batch, no masked LM head for Llama, no shared screened head).

So this function reads ``modules.json`` itself, accepts only the types it knows (our two module classes, or
sentence-transformers' own, for which it simply calls ``SparseEncoder(folder)``), loads each module through its
public ``load`` and builds ``SparseEncoder(modules=…)`` with the folder's prompts, ``max_active_dims`` and
similarity: the same object ST's loader would build, and no code is imported because a file says so.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any

from ..errors import LaconicError

ST_CONFIG = "config_sentence_transformers.json"


class OpenError(LaconicError, ValueError):
    """A folder :func:`open_sparse_encoder` cannot open; the message names the file and what to do."""


def _read(location: str, name: str, hub: dict[str, Any], required: bool = True) -> Any:
    from sentence_transformers.util import load_file_path

    path = load_file_path(location, name, **hub)
    if path is None:
        if required:
            raise OpenError(f"{location}: no {name}; export the encoder with `python -m laconic_pyserini.export "
                            f"sentence-transformers --encoder SPEC --output DIR`")
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise OpenError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _known_classes() -> dict[str, type]:
    from .sentence_transformers import LaconicPooling, LaconicTransformer, module_type

    return {module_type(cls): cls for cls in (LaconicTransformer, LaconicPooling)}


def open_sparse_encoder(folder: str | os.PathLike, *, device: str | None = "cpu", token: bool | str | None = None,
                        cache_folder: str | None = None, revision: str | None = None,
                        local_files_only: bool = False, model_kwargs: dict[str, Any] | None = None):
    """``folder`` (a local export or a hub id) as a ``sentence_transformers.SparseEncoder``; see the module doc.

    ``model_kwargs={"dtype": torch.bfloat16}`` loads a LACONIC model in bf16 (fp32 otherwise).
    """
    from sentence_transformers import SparseEncoder

    location = str(folder)
    hub = dict(token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only)
    entries = _read(location, "modules.json", hub)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise OpenError(f"{location}/modules.json: expected a list of {{'type': …, 'path': …}} entries")
    types = [str(entry["type"]) for entry in entries]
    if all(name.startswith("sentence_transformers.") for name in types):
        return SparseEncoder(location, device=device, model_kwargs=model_kwargs, **hub)
    known = _known_classes()
    unknown = [name for name in types if name not in known and not name.startswith("sentence_transformers.")]
    if unknown:
        raise OpenError(f"{location}/modules.json: module type {unknown[0]!r} is neither this toolkit's nor "
                        f"sentence-transformers'; open it with sentence-transformers itself if you trust its code")
    if os.path.isdir(location):
        from ..spec import load_spec

        load_spec(location)  # the --encoder path's validation: module paths inside the folder, every number
    modules = OrderedDict()
    for entry, name in zip(entries, types):
        cls = known[name] if name in known else _st_class(name)
        extra = {"model_kwargs": model_kwargs} if name in known else {}
        modules[str(entry.get("name", len(modules)))] = cls.load(location, subfolder=entry.get("path", ""),
                                                                 **hub, **extra)
    config = _read(location, ST_CONFIG, hub, required=False)
    return SparseEncoder(modules=modules, device=device, prompts=config.get("prompts"),
                         default_prompt_name=config.get("default_prompt_name"),
                         similarity_fn_name=config.get("similarity_fn_name"),
                         max_active_dims=config.get("max_active_dims"))


def _st_class(name: str) -> type:
    from sentence_transformers.util import import_from_string

    return import_from_string(name)  # within sentence_transformers.*: what ST itself imports without a flag
