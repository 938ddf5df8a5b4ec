"""Model math: the bidirectional switch, the chunked sparse head, model loading and the sparse encoder.

Everything that imports torch lives in this package; the names below are imported on first use so that
``import laconic_pyserini.modeling`` alone stays cheap.
"""

from __future__ import annotations

_EXPORTS = {
    "SparseEncoder": "sparse_encoder",
    "load_sparse_encoder": "sparse_encoder",
    "load_model": "loading",
    "make_bidirectional": "bidirectional",
    "UnsupportedArchitectureError": "bidirectional",
    "sparse_pool": "sparse_head",
}

__all__ = sorted(_EXPORTS)

#: ``--quantize`` of every CLI that encodes with a sparse encoder (:mod:`.quantized`); plain names, so that the CLIs
#: build their flags without importing torch.
#: The schemes llama.cpp runs (:mod:`.llamacpp`); the others are torch's (:mod:`.quantized`).
LLAMA_CPP_SCHEMES = ("q8_0", "q4_0")
QUANTIZE_SCHEMES = ("none", "int8", "int4", *LLAMA_CPP_SCHEMES)
QUANTIZE_HELP = ("decoder (LACONIC) encoders on CPU: none (default: full precision), int8 (torch's int8 kernels, "
                 "the fastest where the CPU has AMX or VNNI), q8_0 (llama.cpp's 8-bit blocks: the closest to full "
                 "precision), q4_0 (llama.cpp's 4-bit blocks: the smallest, the fastest on AVX2-only CPUs) or int4 "
                 "(torch's 4-bit kernel); Llama-architecture models only for q8_0/q4_0; recorded in the manifest as "
                 "an inference setting (docs/quantization.md)")


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
