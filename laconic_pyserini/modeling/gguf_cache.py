"""GGUF checkpoints converted once into plain transformers folders, so that every later load reads safetensors.

transformers reads a GGUF file's metadata three times per load (config, tokenizer, weights: for SmolLM2-135M each
read walks a 49,152-token vocabulary element by element), maps every tensor name anew and de-quantises every
tensor; that is most of a 10-60 s load of a 135M-parameter model on a 2-core CPU. The first load of a GGUF file
therefore writes what transformers made of it (config, fp32 weights as safetensors, tokenizer) to
``<cache>/transformers/<sha256 of the file>-<name>/`` and every load after reads that folder (about a second).

The folder is keyed by the file's content (its digest, remembered by size and mtime in the digest cache), so an
edited or replaced GGUF file is converted again, never served stale; the weights are kept in fp32, what the
de-quantised tensors are, so a bf16 load casts them exactly as a load straight from the GGUF file does. A
conversion is written under a temporary name and renamed into place whole; two processes converting the same
file at once both succeed and one folder is kept. The encoder fingerprint stays the GGUF file's own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..fingerprint import DigestCache

logger = logging.getLogger(__name__)

#: Where GGUF conversions are kept, both ways (llama.cpp's quantised files, :mod:`.llamacpp`, and this module's
#: transformers folders under ``transformers/``).
CACHE_ENV = "LACONIC_GGUF_CACHE"

#: Bump when the folder's layout or contents change: older folders are then left unread.
LAYOUT = "1"


def cache_dir() -> Path:
    """``$LACONIC_GGUF_CACHE``, else ``$XDG_CACHE_HOME/laconic-pyserini/gguf`` (``~/.cache`` when unset)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "laconic-pyserini" / "gguf"


def converted_folder(location: str | os.PathLike, gguf_file: str) -> Path:
    """Where the conversion of ``location/gguf_file`` lives (whether or not it exists yet)."""
    path = Path(location) / gguf_file
    digests = DigestCache()
    digest = digests.digest(path)
    digests.save()
    return cache_dir() / "transformers" / f"{digest[:24]}-v{LAYOUT}-{Path(gguf_file).stem}"


def ensure_converted(location: str | os.PathLike, gguf_file: str) -> Path:
    """The transformers folder of a local GGUF checkpoint, converted now if this file was never converted."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..outputs import remove_temp, temp_path

    target = converted_folder(location, gguf_file)
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to a transformers folder once (%s)", Path(location) / gguf_file, target)
    where = str(location)
    config = AutoConfig.from_pretrained(where, gguf_file=gguf_file, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf_file, config=config, dtype=torch.float32,
                                                 trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=gguf_file, trust_remote_code=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = temp_path(target)
    try:
        # transformers marks a model read from GGUF as quantised and will not save it: its tensors are plain
        # de-quantised fp32 by now, so they are written as they are (tied tensors once), with the config.
        partial.mkdir()
        save_model(model, str(partial / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            os.replace(partial, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise  # not another process's finished conversion: a real failure
    finally:
        if partial.exists():
            remove_temp(partial)
    return target
