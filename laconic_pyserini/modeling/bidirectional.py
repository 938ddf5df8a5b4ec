"""Make a causal decoder attend in both directions, as LACONIC does.

In transformers 5 the decoders of the allow-listed families build their attention mask through
``masking_utils.create_causal_mask`` (and ``create_sliding_window_causal_mask``), which return a bidirectional
(padding-only) mask when ``config.is_causal`` is False. When there is no padding that mask is skipped altogether and
the attention kernel (sdpa, flash, flex) falls back to each attention module's own ``is_causal`` flag, so both must
be switched off: the config for the mask, the modules for the kernel. Families are allow-listed because a family that
builds its mask another way would silently stay causal; the tests check each listed family on a tiny random model.
"""

from __future__ import annotations

import logging

from ..errors import LaconicError

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedArchitectureError(LaconicError, ValueError):
    """The model's family is not one this toolkit knows how to make bidirectional."""


def _base(model):
    # A peft wrapper exposes the transformers model underneath; the switch applies to that model's modules.
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def check_supported(config) -> None:
    """Raise :class:`UnsupportedArchitectureError` unless ``config`` is an allow-listed decoder family."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        architectures = getattr(config, "architectures", None)
        raise UnsupportedArchitectureError(
            f"cannot make model_type {model_type!r} (architectures {architectures}) bidirectional; supported "
            f"decoder families: {', '.join(SUPPORTED_MODEL_TYPES)}. Use a checkpoint of one of these families, "
            f"or add the family to SUPPORTED_MODEL_TYPES after checking that its mask honours config.is_causal.")


def make_bidirectional(model):
    """Switch ``model`` (a transformers decoder, possibly wrapped by peft) to bidirectional attention, in place.

    Idempotent; returns the model. Raises :class:`UnsupportedArchitectureError` for families not allow-listed.
    """
    base = _base(model)
    check_supported(base.config)
    for module in base.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "model_type"):
            config.is_causal = False
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model


def is_bidirectional(model) -> bool:
    """True when every attention module and config of ``model`` has causality switched off."""
    base = _base(model)
    if getattr(base.config, "is_causal", True):
        return False
    return not any(getattr(module, "is_causal", False) for module in base.modules())
