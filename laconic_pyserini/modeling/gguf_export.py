"""A loaded Llama-architecture decoder written as a weights-only GGUF file, for llama.cpp's quantised kernels.

The file holds what llama.cpp's ``llama`` architecture reads and nothing of the tokenizer
(``tokenizer.ggml.model = "none"`` and ``llama.vocab_size``): tokenisation stays :class:`.tokenization.SpecTokenizer`'s
(no BOS, the spec's prefixes, ``max_length``), and llama.cpp only ever sees token ids. It is written from the model
as this toolkit loaded it (safetensors, GGUF through transformers, a merged LoRA adapter), so every source goes
through one path:

- tensors in bf16 (the weights' own precision for LACONIC; fp32 models lose what bf16 rounds away, which the
  quantised types below it lose anyway), norms in fp32;
- ``attn_q`` / ``attn_k`` rows permuted from Hugging Face's rotate-half layout to llama.cpp's adjacent pairs (the
  layout llama.cpp's ``LLAMA_ROPE_TYPE_NORM`` rotates);
- Llama-3's long-context RoPE (``rope_type: llama3``) as a ``rope_freqs`` tensor of per-frequency divisors, which
  changes positions at any length, so short queries need it too;
- ``llama.attention.causal = false``: the encoder is bidirectional;
- the LM head written as ``output.weight`` even when tied to ``token_embd`` (see :func:`write_gguf`).

:func:`quantize_file` then runs llama.cpp's own quantiser (``llama_model_quantize``) to the scheme's type.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..spec import SpecError

#: GGUF's name for the file type of each tensor precision written here (``general.file_type``).
_FILE_TYPE_BF16 = 32


def check_exportable(config) -> None:
    """Refuse, before any weight is read, a decoder llama.cpp's ``llama`` architecture cannot run as written here."""
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        raise SpecError(f"llama.cpp quantisation (--quantize q8_0/q4_0) runs Llama-architecture decoders; this one "
                        f"is {model_type!r}: use --quantize int8 (torch's kernels) instead")
    rope = _rope_parameters(config)
    if rope.get("rope_type", "default") not in ("default", "llama3"):
        raise SpecError(f"RoPE type {rope.get('rope_type')!r} is not written to GGUF here (default and llama3 are); "
                        "use --quantize int8 instead")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise SpecError("a Llama with attention or MLP biases is not written to GGUF here; use --quantize int8")


def _rope_parameters(config) -> dict:
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10_000.0)
    return params


def rope_divisors(config) -> np.ndarray | None:
    """llama.cpp's ``rope_freqs`` for a ``llama3`` RoPE: the factor each frequency's angle is divided by (the
    transformers ``_compute_llama3_parameters`` rule, which scales ``inv_freq`` by its reciprocal); None otherwise."""
    rope = _rope_parameters(config)
    if rope.get("rope_type") != "llama3":
        return None
    head_dim = _head_dim(config)
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    divisors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * float(rope["rope_theta"]) ** (i / head_dim)
        if wavelen < high_wavelen:
            divisors.append(1.0)
        elif wavelen > low_wavelen:
            divisors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(divisors, dtype=np.float32)


def _head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _pairs_adjacent(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection reordered per head from (first half, second half) to interleaved pairs."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _bf16_bytes(weight: torch.Tensor) -> np.ndarray:
    """A 2-D tensor as bf16 bytes in a uint8 array (rows × 2·cols), the form GGUFWriter takes for raw types."""
    data = weight.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    return data.view(np.uint8)


def write_gguf(model, path: Path, *, name: str = "laconic") -> Path:
    """Write ``model`` (a ``LlamaForCausalLM``, its weights as loaded) to ``path`` as a bf16 GGUF."""
    import gguf

    config = model.config
    check_exportable(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = _head_dim(config)
    rope = _rope_parameters(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPE_BF16)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_causal_attention(False)
    writer.add_tokenizer_model("none")

    def bf16(key: str, weight: torch.Tensor) -> None:
        writer.add_tensor(key, _bf16_bytes(weight), raw_dtype=gguf.GGMLQuantizationType.BF16)

    def fp32(key: str, weight: torch.Tensor) -> None:
        writer.add_tensor(key, weight.detach().float().contiguous().numpy())

    body = model.get_decoder()
    bf16("token_embd.weight", body.embed_tokens.weight)
    fp32("output_norm.weight", body.norm.weight)
    # The LM head as a tensor of its own even where it is tied to the input table (Llama-3.2): llama.cpp then keeps
    # it in its fast matmul buffers (AMX / repacked), while the input table, which a lookup never multiplies, stays
    # in the mapped file and only the rows of the tokens looked up are read.
    bf16("output.weight", model.get_output_embeddings().weight)
    divisors = rope_divisors(config)
    if divisors is not None:
        writer.add_tensor("rope_freqs.weight", divisors)
    for i, layer in enumerate(body.layers):
        attn, mlp = layer.self_attn, layer.mlp
        fp32(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        bf16(f"blk.{i}.attn_q.weight", _pairs_adjacent(attn.q_proj.weight, heads))
        bf16(f"blk.{i}.attn_k.weight", _pairs_adjacent(attn.k_proj.weight, kv_heads))
        bf16(f"blk.{i}.attn_v.weight", attn.v_proj.weight)
        bf16(f"blk.{i}.attn_output.weight", attn.o_proj.weight)
        fp32(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        bf16(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        bf16(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        bf16(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
