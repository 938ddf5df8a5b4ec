"""LACONIC encoders on llama.cpp's quantised CPU kernels (``--quantize q8_0`` / ``q4_0``).

A batch-1 query of ~20 tokens reads every weight once and does ~40 FLOPs per weight: it needs a kernel that is
fast at 20 rows on 8 or 4.5 bits per weight. llama.cpp's block formats (Q8_0: 32 weights share a scale; Q4_0: 32
4-bit weights share one) with its AVX2 / AVX512-VNNI / AMX-int8 kernels are that kernel, and activations are
quantised per block of 32 on the fly. The model runs entirely in llama.cpp, LM head included; what is LACONIC
about the encoder stays in :class:`.sparse_encoder.LlamaCppSparseEncoder`:

- token ids come from :class:`.tokenization.SpecTokenizer` (no BOS, the spec's prefixes, ``max_length``); the
  file knows no tokenizer (:mod:`.gguf_export`);
- attention is non-causal (``LLAMA_ATTENTION_TYPE_NON_CAUSAL``; causal only for a spec that says
  ``bidirectional: false``), each sequence in its own ``seq_id`` so that sequences in one batch never see each other;
- llama.cpp returns every token's logits; :meth:`LlamaCppRunner.max_logits` max-pools them over each sequence's
  own tokens (no padding exists); log1p(relu) and the top-k are :mod:`.sparse_head`'s.

The file is read into llama.cpp's buffers (not mapped), where its layers are repacked for the CPU's kernels (AMX
where the CPU has it, else AVX-512 / AVX2). Measured speeds per CPU class are in docs/quantization.md.

The GGUF file is converted once per encoder and scheme and cached (:func:`gguf_path`), keyed by the encoder
fingerprint of the weights on disk: quantisation is an inference setting, and an index built at full precision is
searched with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from ..spec import EncoderSpec, SpecError
from .gguf_cache import cache_dir

logger = logging.getLogger(__name__)

#: ``--quantize`` schemes run by llama.cpp, and the llama.cpp file type each is quantised to.
SCHEMES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
#: Tokens per llama_decode call (at least the spec's max_length): two 256-token documents. llama.cpp sizes its
#: logits and compute buffers by it (~0.25 GB each at 512 tokens × 128,256 terms).
BATCH_TOKENS = 512


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise SpecError("--quantize q8_0/q4_0 needs llama-cpp-python (built from source by `make setup`; by hand: "
                        "pip install llama-cpp-python)") from exc
    return llama_cpp


def gguf_path(spec: EncoderSpec, scheme: str) -> Path | None:
    """Where the converted file of ``spec`` in ``scheme`` is cached; None when the weights have no fingerprint
    (a hub id that is neither a folder nor in the hub cache) and so cannot be recognised again."""
    from ..fingerprint import encoder_fingerprint

    fingerprint = encoder_fingerprint(spec)
    if fingerprint is None:
        return None
    return cache_dir() / f"{fingerprint['sha256'][:24]}-{scheme}.gguf"


def convert(model, target: Path, scheme: str, *, threads: int) -> Path:
    """``model`` written (bf16, :func:`.gguf_export.write_gguf`) and quantised to ``scheme`` at ``target``.

    Both files are written under this toolkit's temporary names beside ``target`` (:mod:`..outputs`) and the
    result renamed into place, so an interrupted conversion leaves no file that looks finished; the bf16
    intermediate is removed."""
    from ..outputs import atomic_path, remove_temp, temp_path
    from .gguf_export import write_gguf

    llama_cpp = _llama_cpp()
    full = temp_path(target.with_name(f"{target.stem}.bf16.gguf"))
    try:
        with atomic_path(target) as partial:
            write_gguf(model, full)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, SCHEMES[scheme])
            params.nthread = threads
            _quiet(llama_cpp)
            if llama_cpp.llama_model_quantize(str(full).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
                raise RuntimeError(f"llama.cpp could not quantise {full} to {scheme}")
    finally:
        remove_temp(full)
    return target


_LOG_CALLBACK = None


def _quiet(llama_cpp) -> None:
    """Route llama.cpp's log lines to this module's logger (its errors as warnings, the rest as debug)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def callback(level, text, _user_data):
        line = text.decode("utf-8", "replace").rstrip()
        if line:
            # Its warnings are about its own use (dummy tokens for a file without a vocabulary, a context shorter
            # than training's): debug here; failures come back as return codes and are raised as errors.
            logger.log(logging.WARNING if level == 4 else logging.DEBUG, "%s", line)

    _LOG_CALLBACK = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def cpu_threads() -> int:
    """``$OMP_NUM_THREADS`` where set (as torch reads it), else the CPUs this process may run on."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _multiplied_bytes(path: Path) -> int:
    """Bytes of the file's tensors that a forward multiplies (all but ``token_embd``, of which a lookup reads the
    query's rows only): the bandwidth floor's numerator."""
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors if t.name != "token_embd.weight")


class LlamaCppRunner:
    """One GGUF model and context: token-id sequences in, each sequence's max-pooled logits out."""

    def __init__(self, path: Path, *, causal: bool = False, threads: int | None = None,
                 batch_tokens: int = BATCH_TOKENS) -> None:
        llama_cpp = self._lib = _llama_cpp()
        _quiet(llama_cpp)
        llama_cpp.llama_backend_init()
        self.path = Path(path)
        self.threads = threads or cpu_threads()
        self.batch_tokens = batch_tokens
        model_params = llama_cpp.llama_model_default_params()
        # Read into llama.cpp's own buffers, not mapped: the layers are repacked (AMX / AVX) into buffers anyway,
        # and a mapping would keep the file's pages resident beside them (measured, LACONIC-1B shape, q4_0: 1.3 GB
        # resident read, 1.9 GB mapped).
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise SpecError(f"llama.cpp could not load {self.path}; delete it (a cached conversion) and rerun")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = 64
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self.threads
        params.attention_type = (llama_cpp.LLAMA_ATTENTION_TYPE_CAUSAL if causal
                                 else llama_cpp.LLAMA_ATTENTION_TYPE_NON_CAUSAL)
        params.embeddings = False
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {self.path}")
        self.causal = causal
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        self.weight_bytes = _multiplied_bytes(self.path)
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, 1)
        self.max_sequences = params.n_seq_max

    def describe(self) -> dict:
        """What runs (for manifests): the engine, its version, the file, its size and the thread count."""
        desc = ctypes.create_string_buffer(256)
        self._lib.llama_model_desc(self._model, desc, len(desc))
        return {"engine": "llama.cpp", "llama_cpp_python": getattr(self._lib, "__version__", "unknown"),
                "gguf": str(self.path), "model": desc.value.decode(), "weight_bytes": self.weight_bytes,
                "threads": self.threads, "attention": "causal" if self.causal else "non-causal",
                "system": self._lib.llama_print_system_info().decode().strip()}

    def max_logits(self, sequences: list[list[int]]) -> np.ndarray:
        """B×V float32: for each token-id sequence, the max over its tokens of the LM head's logits."""
        out = np.empty((len(sequences), self.n_vocab), dtype=np.float32)
        group: list[int] = []
        tokens = 0
        for i, seq in enumerate(sequences):
            if not seq or len(seq) > self.batch_tokens:
                raise ValueError(f"sequence {i} has {len(seq)} tokens; 1 to {self.batch_tokens} are encoded")
            if group and (tokens + len(seq) > self.batch_tokens or len(group) == self.max_sequences):
                self._decode(sequences, group, out)
                group, tokens = [], 0
            group.append(i)
            tokens += len(seq)
        if group:
            self._decode(sequences, group, out)
        return out

    def _decode(self, sequences: list[list[int]], group: list[int], out: np.ndarray) -> None:
        lib, batch = self._lib, self._batch
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        n = 0
        for seq_id, i in enumerate(group):
            for pos, token in enumerate(sequences[i]):
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
                batch.seq_id[n][0], batch.logits[n] = seq_id, 1
                n += 1
        batch.n_tokens = n
        status = lib.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} on {n} tokens")
        logits = np.ctypeslib.as_array(lib.llama_get_logits(self._ctx), shape=(n, self.n_vocab))
        start = 0
        for i in group:
            length = len(sequences[i])
            np.max(logits[start:start + length], axis=0, out=out[i])
            start += length

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def _check_config_on_disk(spec: EncoderSpec) -> None:
    """:func:`.gguf_export.check_exportable` on the checkpoint's ``config.json`` where it is a local folder (the
    base model's, for a LoRA adapter); elsewhere the check runs on the loaded model, before anything is written."""
    import json
    from types import SimpleNamespace

    from ..spec import resolve_model_location
    from .gguf_export import check_exportable

    folder = Path(resolve_model_location(spec.model))
    if (folder / "adapter_config.json").is_file() and spec.base_model:
        folder = Path(resolve_model_location(spec.base_model))
    config = folder / "config.json"
    if not spec.gguf_file and config.is_file():
        check_exportable(SimpleNamespace(**json.loads(config.read_text(encoding="utf-8"))))


def load_runner(spec: EncoderSpec, scheme: str) -> tuple[LlamaCppRunner, object]:
    """The spec's decoder on llama.cpp in ``scheme``, and its tokenizer: the cached conversion if there is one
    (:func:`gguf_path`), else the model loaded as usual (bf16), converted, quantised and cached; of the torch model
    only the tokenizer is kept."""
    from .loading import load_model, load_tokenizer
    from ..spec import resolve_model_location

    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    _llama_cpp()  # a missing engine, or a model it cannot run, is said before gigabytes are read
    _check_config_on_disk(spec)
    target = gguf_path(spec, scheme)
    if target is not None and target.is_file():
        tokenizer, _ = load_tokenizer(spec, resolve_model_location(spec.model))
    else:
        import tempfile

        loaded = load_model(spec, dtype="bf16")
        tokenizer = loaded.tokenizer
        if target is None:
            target = Path(tempfile.mkdtemp(prefix="laconic-gguf-")) / f"model-{scheme}.gguf"
            logger.warning("the weights of %s have no fingerprint; its %s conversion is not cached (%s)",
                           spec.name, scheme, target)
        logger.info("converting %s to GGUF %s at %s (once per encoder)", spec.name, scheme, target)
        convert(loaded.model, target, scheme, threads=cpu_threads())
        del loaded
    batch = max(BATCH_TOKENS, spec.max_length or 0)
    return LlamaCppRunner(target, causal=not spec.bidirectional, batch_tokens=batch), tokenizer
