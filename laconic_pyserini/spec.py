"""The tokenisation contract of an encoder (:class:`EncoderSpec`) and how an ``--encoder`` argument becomes one.

An ``--encoder`` argument is one of
- a spec name from ``encoders/*.yaml`` (``laconic-1b``, ``splade-tiny``, ``minilm``);
- a hub id that one of those specs names as its ``model`` (``utahnlp/laconic-1b``, ``rasyosef/splade-tiny``);
- a local model folder: a folder with an ``encoder_spec.json`` (what training writes) is taken at its word;
  a sentence-transformers SparseEncoder folder brings its prompts, pooling and max_active_dims (``st_folder``);
  otherwise the kind comes from the folder's ``config.json`` architectures (or its LoRA adapter's base, or its GGUF
  header), never from its name, and the defaults of that kind apply (the LACONIC contract for decoders).

Hub ids stay hub ids inside a spec, so a manifest written here reads the same on a machine with network access;
:func:`resolve_model_location` turns them into a local folder under ``$LACONIC_MODELS`` when one exists.
This module imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LaconicError
from .shipped import encoders_dir  # noqa: F401  (spec.encoders_dir: where the shipped specs are)

MODELS_ENV = "LACONIC_MODELS"
SPEC_FILENAME = "encoder_spec.json"
KINDS = ("decoder", "mlm", "dense")
POOLINGS = ("max", "mean", "last", "cls")
ACTIVATIONS = ("log1p_relu", "relu")

# Hub ids whose local copy (unpacked by ../shared/assets/fetch-models.sh) lives under a different folder name than
# the last part of the id. All Llama-3 / 3.1 / 3.2 bases share one 128,256-token tokenizer (unsloth's: ungated).
_LOCAL_NAMES = {
    "unsloth/Llama-3.2-1B": "llama3-tokenizer",
    "meta-llama/Llama-3.2-1B": "llama3-tokenizer",
    "meta-llama/Llama-3.2-3B": "llama3-tokenizer",
    "meta-llama/Llama-3.1-8B": "llama3-tokenizer",
    "meta-llama/Meta-Llama-3-8B": "llama3-tokenizer",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-gguf",
}

# Fields that decide which vector a text becomes, hence whether two encoders' vectors can be compared.
# max_length and top_k are left out: queries and documents may legitimately be truncated differently.
_CONTRACT_FIELDS = ("kind", "tokenizer", "base_model", "gguf_file", "query_prefix", "passage_prefix",
                    "add_special_tokens", "pooling", "activation", "logit_offset", "quant_scale", "normalize",
                    "bidirectional")


class SpecError(LaconicError, ValueError):
    """An encoder spec or ``--encoder`` argument that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides how a text becomes a vector; written into every output's ``manifest.json``."""

    name: str
    model: str
    kind: str
    tokenizer: str | None = None
    base_model: str | None = None
    gguf_file: str | None = None
    query_prefix: str = ""
    passage_prefix: str = ""
    add_special_tokens: bool = True
    max_length: int = 256
    pooling: str = "max"
    activation: str = "log1p_relu"
    # Sparse kinds: subtracted from every pooled logit before the activation, weight = activation(max logit − offset).
    # 0 for LACONIC and SPLADE. A decoder's softmax ignores a constant shift of its logits, so for a language model
    # this is a threshold on the logits that leaves the model itself unchanged (set by training: docs/training.md).
    logit_offset: float = 0.0
    top_k: int | None = None
    quant_scale: float = 100.0
    normalize: bool = False
    # Decoders only: attend in both directions (LACONIC). Encoder-only models are bidirectional anyway.
    bidirectional: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.kind != "dense" and self.pooling != "max":
            problems.append(f"a sparse ({self.kind}) encoder max-pools; pooling {self.pooling!r} is for dense kinds")
        if self.kind != "dense" and self.activation not in ACTIVATIONS:
            problems.append(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            problems.append(f"max_length must be a positive integer, not {self.max_length!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            problems.append(f"top_k must be a positive integer or null, not {self.top_k!r}")
        if not is_finite_number(self.logit_offset):
            problems.append(f"logit_offset must be a finite number, not {self.logit_offset!r}")
        if not is_finite_number(self.quant_scale) or not self.quant_scale > 0:
            problems.append(f"quant_scale must be a positive number, not {self.quant_scale!r}")
        if self.gguf_file is not None and not is_plain_name(self.gguf_file):
            problems.append(f"gguf_file must name a file in the model folder (no folder part, no '..'), not "
                            f"{self.gguf_file!r}")
        if problems:
            raise SpecError(f"encoder spec {self.name!r}: " + "; ".join(problems))

    # ---------------------------------------------------------------------------------------- (de)serialising

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "spec") -> "EncoderSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"{source}: unknown encoder spec field(s) {', '.join(unknown)}; "
                            f"known fields: {', '.join(sorted(known))}")
        missing = [k for k in ("name", "model", "kind") if not d.get(k)]
        if missing:
            raise SpecError(f"{source}: encoder spec needs {', '.join(missing)}")
        values = dict(d)
        for key in ("quant_scale", "logit_offset"):  # a JSON integer is the same number
            if isinstance(values.get(key), int) and not isinstance(values[key], bool):
                values[key] = float(values[key])
        return cls(**values)

    # ---------------------------------------------------------------------------------------- texts

    def query_text(self, text: str) -> str:
        return self.query_prefix + text

    def document_text(self, title: str, text: str, as_query: bool = False) -> str:
        """``passage: {title} {text}`` (``passage: {text}`` when the title is empty).

        ``as_query`` gives documents the query prefix, as BEIR Quora and CQADupStack documents are questions.
        """
        body = f"{title} {text}" if title else text
        return (self.query_prefix if as_query else self.passage_prefix) + body

    # ---------------------------------------------------------------------------------------- compatibility

    def mismatch(self, other: "EncoderSpec") -> str | None:
        """Why vectors of ``self`` and ``other`` cannot be scored against each other, or None if they can."""
        reasons = []
        if self.name != other.name:
            reasons.append(f"encoder {self.name!r} vs {other.name!r}")
        if not _same_location(self.model, other.model) and not (_is_local(self.model) or _is_local(other.model)):
            reasons.append(f"model {self.model!r} vs {other.model!r}")
        for field in _CONTRACT_FIELDS:
            a, b = getattr(self, field), getattr(other, field)
            if field in ("tokenizer", "base_model") and a and b and _same_location(a, b):
                continue
            if a != b:
                reasons.append(f"{field} {a!r} vs {b!r}")
        return "; ".join(reasons) if reasons else None


def is_finite_number(value) -> bool:
    """An int or float (not a bool) that is neither inf nor nan."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_plain_name(value) -> bool:
    """A file name inside a folder: a non-empty string without a folder part, ``..`` or a leading ``/``."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value


def current_spec_dict(recorded: dict) -> dict:
    """A spec as recorded in an output's manifest, with the fields added since it was written at their defaults
    (``logit_offset``: 0), so that a rerun over an older output sees the same encoder; unchanged if unreadable."""
    try:
        return EncoderSpec.from_dict(recorded).to_dict()
    except (SpecError, TypeError):
        return recorded


def _same_location(a: str, b: str) -> bool:
    # A hub id, its local copy and another hub copy of one tokenizer (meta-llama's, unsloth's) are one thing.
    same_copy = _LOCAL_NAMES.get(a, a) == _LOCAL_NAMES.get(b)
    return a == b or same_copy or resolve_model_location(a) == resolve_model_location(b)


def _is_local(model: str) -> bool:
    # A local folder's path differs from machine to machine; the spec name still identifies it.
    return os.path.isabs(model) or model.startswith(".")


# -------------------------------------------------------------------------------------------- locations


def models_root() -> Path:
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "laconic-models").expanduser()


def resolve_model_location(hub_id_or_path: str) -> str:
    """A local folder for a hub id or path: the path itself if it exists, else ``$LACONIC_MODELS/<local name>``
    if that exists, else the hub id unchanged (transformers downloads it where there is a network)."""
    path = Path(hub_id_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    local_name = _LOCAL_NAMES.get(hub_id_or_path, hub_id_or_path.rstrip("/").rsplit("/", 1)[-1])
    local = models_root() / local_name
    if local.is_dir():
        return str(local)
    return hub_id_or_path


# -------------------------------------------------------------------------------------------- yaml specs


def known_specs() -> dict[str, EncoderSpec]:
    """Every shipped spec by name."""
    from .yaml_file import read_yaml_mapping

    specs = {}
    for path in sorted(encoders_dir().glob("*.yaml")):
        data = read_yaml_mapping(path, SpecError, missing="the shipped specs are in encoders/",
                                 shape="encoder spec fields (name, model, kind, ...)")
        data.setdefault("name", path.stem)
        if data["name"] != path.stem:
            raise SpecError(f"{path}: name {data['name']!r} differs from the file name; rename one of them")
        specs[path.stem] = EncoderSpec.from_dict(data, source=str(path))
    return specs


def _spec_by_hub_id(encoder: str, specs: dict[str, EncoderSpec]) -> EncoderSpec | None:
    """The one shipped spec whose model is the hub id ``encoder``; two are an error naming both."""
    matches = sorted(name for name, spec in specs.items() if spec.model == encoder)
    if len(matches) > 1:
        raise SpecError(f"--encoder {encoder!r} is the model of several shipped specs ({', '.join(matches)}); "
                        "pass the spec name instead")
    return specs[matches[0]] if matches else None


def load_spec(encoder: str, *, tokenizer: str | None = None, **overrides) -> EncoderSpec:
    """The spec for a spec name, a hub id named by a shipped spec, or a local model folder.

    ``tokenizer`` and ``overrides`` (any :class:`EncoderSpec` field, e.g. ``max_length=128``) replace the spec's
    values; ``None`` values are ignored so CLI flags can be passed through unconditionally.
    """
    specs = known_specs()
    spec = specs.get(encoder) or _spec_by_hub_id(encoder, specs)
    if spec is None:
        path = Path(encoder).expanduser()
        if path.is_dir():
            spec = _spec_for_folder(path.resolve(), specs)
        elif path.is_file() and path.suffix == ".gguf":
            spec = _spec_for_folder(path.resolve().parent, specs, gguf_file=path.name)
        else:
            raise SpecError(
                f"--encoder {encoder!r} is not a shipped spec ({', '.join(sorted(specs)) or 'none found'}), "
                f"not a hub id named by one ({', '.join(sorted(s.model for s in specs.values()))}), "
                f"and not a local folder; pass one of those, or a folder with config.json")
    changes = {k: v for k, v in dict(overrides, tokenizer=tokenizer).items() if v is not None}
    if changes:
        known = {f.name for f in dataclasses.fields(EncoderSpec)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SpecError(f"unknown encoder spec field(s) {', '.join(unknown)}")
        spec = dataclasses.replace(spec, **changes)
    return spec


# -------------------------------------------------------------------------------------------- folders


def _spec_for_folder(folder: Path, specs: dict[str, EncoderSpec], gguf_file: str | None = None) -> EncoderSpec:
    saved = folder / SPEC_FILENAME
    if saved.exists():
        data = _read_json(saved)
        data["model"] = str(folder)
        return EncoderSpec.from_dict(data, source=str(saved))
    sentence_transformers_spec = _sentence_transformers_folder_spec(folder)
    if sentence_transformers_spec is not None:
        return sentence_transformers_spec
    # A local copy of a shipped spec's model (e.g. $LACONIC_MODELS/splade-tiny) is that spec.
    for spec in specs.values():
        location = Path(resolve_model_location(spec.model))
        if location.exists() and location.resolve() == folder and gguf_file in (None, spec.gguf_file):
            return spec
    kind, base_model = detect_kind(folder)
    if gguf_file is None and not (folder / "config.json").exists():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        gguf_file = ggufs[0] if len(ggufs) == 1 else None
    name = folder.name
    if kind == "decoder":
        return EncoderSpec(name=name, model=str(folder), kind="decoder", base_model=base_model,
                           gguf_file=gguf_file, **LACONIC_CONTRACT)
    if kind == "mlm":
        return EncoderSpec(name=name, model=str(folder), kind="mlm", base_model=base_model,
                           add_special_tokens=True, max_length=256, pooling="max", activation="log1p_relu")
    from .st_folder import FolderError, dense_folder_fields

    try:
        return EncoderSpec(name=name, model=str(folder), kind="dense", **dense_folder_fields(folder))
    except FolderError as exc:
        raise SpecError(str(exc)) from None


def _sentence_transformers_folder_spec(folder: Path) -> EncoderSpec | None:
    """A sentence-transformers SparseEncoder folder's prompts, pooling and max_active_dims (None if not one)."""
    from .st_folder import FolderError, sparse_encoder_folder_spec

    try:
        found = sparse_encoder_folder_spec(folder)
    except FolderError as exc:
        raise SpecError(str(exc)) from None
    return None if found is None else EncoderSpec.from_dict(found[0], source=found[1])


# The LACONIC input contract; a decoder folder without its own spec gets it.
LACONIC_CONTRACT = dict(query_prefix="query: ", passage_prefix="passage: ", add_special_tokens=False,
                        max_length=256, pooling="max", activation="log1p_relu", top_k=512, quant_scale=100.0)


def _read_json(path: Path, shape: type = dict) -> dict | list:
    """A model folder's JSON file: bounded, UTF-8, of type ``shape`` (one error naming the file otherwise)."""
    from .json_file import read_json_file

    return read_json_file(path, SpecError, shape=shape, missing="is this a model folder?",
                          invalid="fix the model folder's file, or pass another --encoder")


def detect_kind(folder: Path) -> tuple[str, str | None]:
    """(kind, base model of a LoRA adapter or None) from what a folder holds, never from its name."""
    adapter = folder / "adapter_config.json"
    if adapter.exists():
        config = _read_json(adapter)
        if not (folder / "adapter_model.safetensors").is_file():
            raise SpecError(f"{folder}: a LoRA adapter is loaded from adapter_model.safetensors only (pickled "
                            "adapter_model.bin files are never loaded); save it with safe_serialization=True")
        base = config.get("base_model_name_or_path")
        if not isinstance(base, str) or not base:
            raise SpecError(f"{adapter}: a LoRA adapter must name base_model_name_or_path")
        base_folder = Path(resolve_model_location(base))
        if base_folder.is_dir():
            return detect_kind(base_folder)[0], base
        task = config.get("task_type")
        if task == "CAUSAL_LM":
            return "decoder", base
        raise SpecError(f"{adapter}: cannot tell the kind of base model {base!r} (not found locally and task_type "
                        f"{task!r}); pass --encoder with a spec that sets kind")
    modules = folder / "modules.json"
    if modules.exists():
        types = " ".join(str(m.get("type", "")) for m in _read_json(modules, list) if isinstance(m, dict))
        return ("mlm" if "SpladePooling" in types or "MLMTransformer" in types else "dense"), None
    config_path = folder / "config.json"
    if config_path.exists():
        architectures = _read_json(config_path).get("architectures") or []
        if not isinstance(architectures, list):
            raise SpecError(f"{config_path}: architectures must be a list of class names, not {architectures!r}")
        architectures = [str(arch) for arch in architectures]
        for arch in architectures:
            if arch.endswith("ForCausalLM"):
                return "decoder", None
            if arch.endswith("ForMaskedLM"):
                return "mlm", None
        for arch in architectures:
            if arch.endswith("Model"):
                return "dense", None
        raise SpecError(f"{config_path}: architectures {architectures} are neither *ForCausalLM (decoder), "
                        f"*ForMaskedLM (mlm) nor *Model (dense); pass a spec with an explicit kind")
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        architecture = _gguf_architecture(ggufs[0])
        if architecture in ("llama", "qwen2", "mistral"):
            return "decoder", None
        raise SpecError(f"{ggufs[0]}: GGUF architecture {architecture!r} is not a supported decoder")
    raise SpecError(f"{folder}: no config.json, adapter_config.json, modules.json, {SPEC_FILENAME} or *.gguf; "
                    f"is this a model folder?")


def _gguf_architecture(path: Path) -> str:
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.architecture")
    if field is None:
        raise SpecError(f"{path}: GGUF file without general.architecture")
    return bytes(field.parts[field.data[0]]).decode("utf-8")
