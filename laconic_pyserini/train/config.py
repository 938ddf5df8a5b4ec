"""Training configuration: dataclasses loaded from one YAML file per phase.

Every field has a default except the backbone, the training data and the output folder, so a config names only
what differs. Unknown keys are errors (a typo such as ``learning_rate`` for ``lr`` must not silently fall back to a
default), reported with the file and the section.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LaconicError
from ..spec import is_finite_number
from ..yaml_file import read_yaml_mapping

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("cosine", "linear", "constant")


class ConfigError(LaconicError, ValueError):
    """A training config that cannot be used; the message names the file, the key and the fix."""


@dataclass
class ModelConfig:
    # Spec name, hub id or local folder (for phase 2: the phase-1 output folder).
    backbone: str = ""
    tokenizer: str | None = None
    # Name written into the output's encoder spec.
    name: str = "laconic-trained"
    # Centre the frozen LM head before training (modeling/head_centering.py): an LM-equivalent change that removes
    # the component every row shares, which otherwise makes the max-pool take most terms from the same few
    # positions (SmolLM2). Not in the paper; needs train.merge: true (an adapter cannot carry the centred head).
    center_head: bool = False
    # Subtract this constant from every pooled logit before log1p(relu) (the spec's logit_offset), in training and
    # in the written encoder: a threshold that leaves the language model unchanged (its softmax ignores a constant
    # shift) and makes the vectors sparse from the first step, so the loss trains the terms the index will keep.
    # null = the backbone's own (0 for a plain LM; a phase-1 output carries the offset it was trained with).
    # Not in the paper.
    logit_offset: float | None = None


@dataclass
class LoraConfig:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


@dataclass
class DataConfig:
    # JSONL: pairs (phase 1) or triples (phase 2); see laconic_pyserini.train.data for the accepted layouts.
    train: str = ""
    # Only lines whose "source" is listed (title/abstract pairs carry one); empty = all.
    sources: list[str] = field(default_factory=list)
    # Lines whose "source" is listed are dropped (e.g. the corpora you evaluate on).
    exclude_sources: list[str] = field(default_factory=list)
    # Phase 2: hard negatives per query (the paper: 15).
    negatives: int = 15
    # Use only the first N examples (a quick run); null = all.
    max_examples: int | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0


@dataclass
class LossConfig:
    temperature: float = 1.0
    flops_query: float = 5e-4
    flops_passage: float = 5e-4
    # The FLOPS weights rise quadratically from 0 to their value over this fraction of the optimizer steps.
    flops_warmup_ratio: float = 0.1


@dataclass
class TrainConfig:
    phase: int = 1
    output_dir: str = ""
    # Queries per process per micro-batch; the global batch is batch_size × processes × grad_accum.
    batch_size: int = 32
    grad_accum: int = 1
    epochs: float = 1.0
    # When set, overrides epochs.
    max_steps: int | None = None
    query_max_length: int = 64
    passage_max_length: int = 192
    # auto: bf16 autocast where bf16 kernels are fast (CUDA with bf16, AVX512_BF16/AMX CPUs), fp32 elsewhere
    # (laconic_pyserini.modeling.cpu); an explicit bf16 is kept, with a warning on a CPU that emulates it.
    precision: str = "auto"
    seed: int = 42
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    # Gather passages (and queries for the FLOPS term) from every process: more negatives per query.
    gather_negatives: bool = True
    # CPU threads for torch (null: torch's default). On a shared machine set it explicitly.
    threads: int | None = None
    # Write merged weights (safetensors) or only the LoRA adapter.
    merge: bool = True
    gradient_checkpointing: bool = False


@dataclass
class Config:
    model: ModelConfig
    lora: LoraConfig
    data: DataConfig
    optim: OptimConfig
    loss: LossConfig
    train: TrainConfig
    source: str = "config"

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}


_SECTIONS = {"model": ModelConfig, "lora": LoraConfig, "data": DataConfig, "optim": OptimConfig,
             "loss": LossConfig, "train": TrainConfig}


def config_from_dict(raw: dict, source: str = "config") -> Config:
    """Build and check a :class:`Config`; ``source`` names the file in error messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a training config is a mapping of sections ({', '.join(_SECTIONS)})")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; sections are {', '.join(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, not {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(bad)} in section {name!r}; "
                              f"known keys: {', '.join(sorted(known))}")
        sections[name] = cls(**_coerce(cls, values, f"{source}: section {name!r}"))
    config = Config(**sections, source=source)
    _check(config)
    return config


def _coerce(cls, values: dict, where: str) -> dict:
    # PyYAML reads 1e-4 (no dot) as a string; numbers written that way are common in configs.
    out = dict(values)
    for f in dataclasses.fields(cls):
        value = out.get(f.name)
        if f.type in ("float", "float | None") and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                out[f.name] = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {f.name} must be a number, not {value!r}") from None
    return out


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> Config:
    """Read a YAML config; ``overrides`` (``{"train.max_steps": 10}``) replace single keys after reading."""
    path = Path(path)
    raw = read_yaml_mapping(path, ConfigError, missing="the shipped configs are in configs/",
                            shape="model, lora, data, optim, loss and train sections", empty_ok=True)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r}: use SECTION.KEY=VALUE, e.g. train.max_steps=10")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        raw[section][key] = value
    return config_from_dict(raw, source=str(path))


def _check(config: Config) -> None:
    problems = []
    if not config.model.backbone:
        problems.append("model.backbone is required (a spec name, hub id or local model folder)")
    if not config.data.train:
        problems.append("data.train is required (a JSONL file of pairs or triples)")
    if not config.train.output_dir:
        problems.append("train.output_dir is required")
    if not isinstance(config.model.center_head, bool):
        problems.append(f"model.center_head must be true or false, not {config.model.center_head!r}")
    elif config.model.center_head and not config.train.merge:
        problems.append("model.center_head: true changes the LM head, which a LoRA adapter does not carry; "
                        "use train.merge: true")
    offset = config.model.logit_offset
    if offset is not None and not is_finite_number(offset):
        problems.append(f"model.logit_offset must be a number or null, not {offset!r}")
    if config.train.phase not in (1, 2):
        problems.append(f"train.phase must be 1 (pairs) or 2 (hard negatives), not {config.train.phase!r}")
    if config.train.precision not in PRECISIONS:
        problems.append(f"train.precision must be one of {', '.join(PRECISIONS)}")
    if config.optim.schedule not in SCHEDULES:
        problems.append(f"optim.schedule must be one of {', '.join(SCHEDULES)}")
    for name in ("batch_size", "grad_accum", "query_max_length", "passage_max_length", "save_every", "log_every",
                 "keep_checkpoints"):
        if not isinstance(getattr(config.train, name), int) or getattr(config.train, name) < 1:
            problems.append(f"train.{name} must be a positive integer")
    if config.train.max_steps is not None and (not isinstance(config.train.max_steps, int) or config.train.max_steps < 1):
        problems.append("train.max_steps must be a positive integer or null")
    if config.train.phase == 2 and config.data.negatives < 1:
        problems.append("data.negatives must be at least 1 in phase 2")
    if not config.loss.temperature > 0:
        problems.append("loss.temperature must be positive")
    if config.loss.flops_query < 0 or config.loss.flops_passage < 0:
        problems.append("loss.flops_query and loss.flops_passage must be ≥ 0")
    if not 0 <= config.optim.warmup_ratio < 1 or not 0 <= config.loss.flops_warmup_ratio <= 1:
        problems.append("optim.warmup_ratio must be in [0, 1) and loss.flops_warmup_ratio in [0, 1]")
    if config.lora.r < 1:
        problems.append("lora.r must be ≥ 1")
    if problems:
        raise ConfigError(f"{config.source}: " + "; ".join(problems))
