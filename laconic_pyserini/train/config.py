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
        sections[name] = cls(**_coerce(cls, values, source, name))
    config = Config(**sections, source=source)
    _check(config)
    return config


def _coerce(cls, values: dict, source: str, section: str) -> dict:
    # PyYAML reads 1e-4 (no dot) as a string; numbers written that way are common in configs.
    out = dict(values)
    for f in dataclasses.fields(cls):
        value = out.get(f.name)
        if f.type in ("float", "float | None") and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                out[f.name] = float(value)
            except ValueError:
                raise ConfigError(f"{source}: {section}.{f.name} must be a number, not {value!r}") from None
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


# ------------------------------------------------------------------------------------------------ checks
# Every field's type and range, so that a bad value is reported with the file and the key before any model loads
# (a negative lr otherwise passes and fails inside torch minutes later).


def _int(low: int):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer ≥ {low}"


def _number(low: float, *, above: bool = False, high: float | None = None, below: bool = False):
    def ok(v) -> bool:
        if not is_finite_number(v) or (v <= low if above else v < low):
            return False
        return high is None or (v < high if below else v <= high)

    what = f"a number {'>' if above else '≥'} {low:g}"
    if high is not None:
        what = f"a number in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
    return ok, what


def _optional(rule):
    check, what = rule
    return (lambda v: v is None or check(v)), f"{what} or null"


def _choice(*choices):
    return (lambda v: v in choices), "one of " + ", ".join(map(str, choices))


_BOOL = (lambda v: isinstance(v, bool)), "true or false"
_TEXT = (lambda v: isinstance(v, str) and v.strip() != ""), "a non-empty string"
_TEXTS = (lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v)), "a list of strings"
_TEXTS_1 = (lambda v: _TEXTS[0](v) and len(v) > 0), "a non-empty list of strings"
_POSITIVE = _int(1)

#: (section, key) -> (check, what a valid value is). Required keys (backbone, train, output_dir) are _TEXT.
RULES = {
    ("model", "backbone"): _TEXT, ("model", "tokenizer"): _optional(_TEXT), ("model", "name"): _TEXT,
    ("model", "center_head"): _BOOL, ("model", "logit_offset"): _optional((is_finite_number, "a number (finite)")),
    ("lora", "r"): _POSITIVE, ("lora", "alpha"): _number(0, above=True),
    ("lora", "dropout"): _number(0, high=1, below=True), ("lora", "target_modules"): _TEXTS_1,
    ("data", "train"): _TEXT, ("data", "sources"): _TEXTS, ("data", "exclude_sources"): _TEXTS,
    ("data", "negatives"): _int(0), ("data", "max_examples"): _optional(_POSITIVE),
    ("optim", "lr"): _number(0, above=True), ("optim", "weight_decay"): _number(0),
    ("optim", "schedule"): _choice(*SCHEDULES), ("optim", "warmup_ratio"): _number(0, high=1, below=True),
    ("optim", "max_grad_norm"): _number(0, above=True),
    ("loss", "temperature"): _number(0, above=True), ("loss", "flops_query"): _number(0),
    ("loss", "flops_passage"): _number(0), ("loss", "flops_warmup_ratio"): _number(0, high=1),
    ("train", "phase"): _choice(1, 2), ("train", "output_dir"): _TEXT, ("train", "batch_size"): _POSITIVE,
    ("train", "grad_accum"): _POSITIVE, ("train", "epochs"): _number(0, above=True),
    ("train", "max_steps"): _optional(_POSITIVE), ("train", "query_max_length"): _POSITIVE,
    ("train", "passage_max_length"): _POSITIVE, ("train", "precision"): _choice(*PRECISIONS),
    ("train", "seed"): _int(0), ("train", "save_every"): _POSITIVE, ("train", "keep_checkpoints"): _POSITIVE,
    ("train", "log_every"): _POSITIVE, ("train", "gather_negatives"): _BOOL, ("train", "threads"): _optional(_POSITIVE),
    ("train", "merge"): _BOOL, ("train", "gradient_checkpointing"): _BOOL,
}
_REQUIRED = {("model", "backbone"): "a spec name, hub id or local model folder",
             ("data", "train"): "a JSONL file of pairs or triples", ("train", "output_dir"): "a folder to write"}


def _check(config: Config) -> None:
    problems = []
    for (section, key), (check, what) in RULES.items():
        value = getattr(getattr(config, section), key)
        if (section, key) in _REQUIRED and value in ("", None):
            problems.append(f"{section}.{key} is required ({_REQUIRED[section, key]})")
        elif not check(value):
            problems.append(f"{section}.{key} must be {what}, not {value!r}")
    if config.model.center_head is True and config.train.merge is False:
        problems.append("model.center_head: true changes the LM head, which a LoRA adapter does not carry; "
                        "use train.merge: true")
    if config.train.phase == 2 and config.data.negatives == 0:
        problems.append("data.negatives must be at least 1 in phase 2")
    if problems:
        raise ConfigError(f"{config.source}: " + "; ".join(problems))


def check_inputs(config: Config) -> None:
    """The files a config names exist (data.train, a local backbone or tokenizer) and train.output_dir is a folder;
    checked before any model loads. Relative paths are read from the current folder, as training reads them."""
    problems = []
    train_file = Path(config.data.train).expanduser()
    if not train_file.is_file():
        hint = ("mine hard negatives into it with `python -m laconic_pyserini.train.mine`" if config.train.phase == 2
                else "point it at a JSONL file of pairs (see docs/training.md)")
        problems.append(f"data.train {config.data.train!r}: no such file (from {Path.cwd()}); {hint}")
    for key in ("backbone", "tokenizer"):
        problem = _location_problem(key, getattr(config.model, key), config.train.phase)
        if problem:
            problems.append(problem)
    output = Path(config.train.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        problems.append(f"train.output_dir {config.train.output_dir!r} is a file, not a folder")
    if problems:
        raise ConfigError(f"{config.source}: " + "; ".join(problems))


def _location_problem(key: str, value: str | None, phase: int) -> str | None:
    """Why ``model.<key>`` names nothing usable, or None (a hub id that may be downloaded passes)."""
    from ..spec import SpecError, known_specs, load_spec, resolve_model_location

    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists():
        if key == "tokenizer":
            return None
        try:
            load_spec(value)
        except SpecError as exc:
            return f"model.backbone {value!r}: {exc}"
        return None
    specs = known_specs()
    if value in specs or any(s.model == value for s in specs.values()) or Path(resolve_model_location(value)).exists():
        return None
    # A hub id is ORG/NAME; anything else that does not exist is a path that is missing.
    if value.count("/") == 1 and not value.startswith((".", "/", "~")):
        return None
    hint = " (phase 2 starts from the phase-1 output: run phase 1 first)" if phase == 2 and key == "backbone" else ""
    return f"model.{key} {value!r}: no such folder (from {Path.cwd()}), shipped spec or hub id{hint}"
