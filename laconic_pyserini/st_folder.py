"""An ``--encoder`` folder saved by sentence-transformers as a ``SparseEncoder``, read into an :class:`EncoderSpec`.

Two shapes are understood, and anything else a SparseEncoder folder may hold is refused by name:

- SPLADE (what exists in the wild): ``MLMTransformer`` or ``Transformer`` with ``transformer_task: fill-mask``, then
  ``SpladePooling`` with ``pooling_strategy: max`` and ``activation_function: relu`` (ST's ``relu`` is log1p(relu),
  our ``log1p_relu``); ST's ``sum`` pooling and its ``log1p_relu`` (log1p twice) are not implemented here;
- LACONIC: ``LaconicTransformer`` + ``LaconicPooling`` (``laconic_pyserini.integrations``, what ``export`` writes).

The prompts (``query``; ``document``, ``passage`` or ``corpus``, in ST's own order) become the prefixes and
``max_active_dims`` becomes ``top_k``. This module reads JSON only: no torch, no sentence-transformers.
"""

from __future__ import annotations

from pathlib import Path

from .json_file import read_json_file


class FolderError(ValueError):
    """What makes a SparseEncoder folder unusable here; :mod:`.spec` reports it as its own ``SpecError``."""


HERE = "."  # a location saved as "." is the module's own folder
TRANSFORMER_CONFIG = "laconic_transformer.json"
TRANSFORMER_FIELDS = ("name", "model", "kind", "tokenizer", "base_model", "gguf_file", "add_special_tokens",
                      "max_length", "bidirectional", "quant_scale")
POOLING_FIELDS = ("activation", "logit_offset")
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # SparseEncoder.encode_document's order
# Tokeniser call settings a SPLADE Transformer may save that leave the vector unchanged or that we honour.
_HONOURED_PROCESSING = {"padding", "truncation", "max_length", "add_special_tokens"}


def _json(path: Path, shape: type = dict):
    return read_json_file(path, FolderError, shape=shape, missing="is this a sentence-transformers folder?",
                          invalid="fix the model folder's file, or pass another --encoder")


def _optional_json(path: Path) -> dict:
    return _json(path) if path.exists() else {}


def module_folder(folder: Path, entry, modules_path: Path) -> Path:
    """The folder of one ``modules.json`` entry, which must lie inside ``folder``: a relative path without ``..``
    that resolves (symbolic links followed) inside it; anything else is refused."""
    if not isinstance(entry, dict):
        raise FolderError(f"{modules_path}: expected entries {{'type': …, 'path': …}}, found {entry!r}")
    raw = entry.get("path", "")
    if not isinstance(raw, str) or Path(raw).is_absolute() or ".." in Path(raw).parts or "\\" in raw:
        raise FolderError(f"{modules_path}: module path {raw!r} must be a folder inside {folder} (relative, no "
                          "'..'); fix the entry")
    path = folder / raw
    if not path.resolve().is_relative_to(folder.resolve()):
        raise FolderError(f"{modules_path}: module path {raw!r} leads outside {folder} (a symbolic link); copy the "
                          "module into the folder")
    return path


def sparse_encoder_folder_spec(folder: Path) -> tuple[dict, str] | None:
    """The encoder spec fields of a sentence-transformers SparseEncoder folder and the file they come from; None
    when ``folder`` is not one (a dense SentenceTransformer folder, a plain model folder). This module sits below
    :mod:`.spec`, which builds the :class:`~laconic_pyserini.spec.EncoderSpec` from the fields."""
    modules_path = folder / "modules.json"
    if not modules_path.exists():
        return None
    st_config = _optional_json(folder / "config_sentence_transformers.json")
    modules = _json(modules_path, list)
    paths = [module_folder(folder, m, modules_path) for m in modules]
    classes = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    sparse_classes = {"SpladePooling", "MLMTransformer", "LaconicPooling", "LaconicTransformer"}
    if st_config.get("model_type") != "SparseEncoder" and not sparse_classes & set(classes):
        return None
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise FolderError(f"{folder / 'config_sentence_transformers.json'}: prompts must map names to strings")
    document_prompt = next((prompts[name] for name in DOCUMENT_PROMPTS if name in prompts), "")
    common = dict(query_prefix=prompts.get("query") or "", passage_prefix=document_prompt or "",
                  top_k=st_config.get("max_active_dims"))
    if classes == ["LaconicTransformer", "LaconicPooling"]:
        return _laconic_spec(paths, common)  # keeps the name it was exported under
    if len(classes) == 2 and classes[1] == "SpladePooling" and _is_fill_mask(classes[0], paths[0]):
        return _splade_spec(paths, dict(common, name=folder.name))
    raise FolderError(f"{modules_path}: a SparseEncoder of modules {classes}; this toolkit runs MLMTransformer (or a "
                    f"fill-mask Transformer) + SpladePooling and LaconicTransformer + LaconicPooling only")


def _is_fill_mask(cls: str, path: Path) -> bool:
    if cls == "MLMTransformer":
        return True
    return cls == "Transformer" and _optional_json(path / "sentence_bert_config.json").get("transformer_task") \
        == "fill-mask"


def _laconic_spec(paths: list[Path], common: dict) -> tuple[dict, str]:
    config_path = paths[0] / TRANSFORMER_CONFIG
    if not config_path.exists():
        raise FolderError(f"{config_path} is missing; re-export the folder with python -m laconic_pyserini.export")
    saved = _json(config_path)
    unknown = sorted(set(saved) - set(TRANSFORMER_FIELDS))
    if unknown:
        raise FolderError(f"{config_path}: unknown field(s) {', '.join(unknown)}")
    for field in ("model", "tokenizer"):
        if saved.get(field) == HERE:
            saved[field] = str(paths[0])
    pooling = _optional_json(paths[1] / "config.json")
    pooling = {k: pooling[k] for k in POOLING_FIELDS if k in pooling}
    return dict(saved, **pooling, pooling="max", **common), str(config_path)


def _splade_spec(paths: list[Path], common: dict) -> tuple[dict, str]:
    pooling_path = paths[1] / "config.json"
    pooling = _optional_json(pooling_path)
    strategy, activation = pooling.get("pooling_strategy", "max"), pooling.get("activation_function", "relu")
    if strategy != "max":
        raise FolderError(f"{pooling_path}: pooling_strategy {strategy!r} is not implemented here (this toolkit "
                        f"max-pools, as SPLADE v2 and later do)")
    if activation != "relu":
        raise FolderError(f"{pooling_path}: activation_function {activation!r} (log1p applied twice) is not "
                        f"implemented here; only 'relu' (weights log1p(relu(logit))) is")
    model_dir = paths[0]
    if not any(model_dir.glob("*.safetensors")):
        raise FolderError(f"{model_dir}: no *.safetensors weights (this toolkit loads no pickled weights); convert "
                        f"the checkpoint with transformers' save_pretrained(safe_serialization=True)")
    sbert = _optional_json(model_dir / "sentence_bert_config.json")
    if sbert.get("do_lower_case"):
        raise FolderError(f"{model_dir / 'sentence_bert_config.json'}: do_lower_case lower-cases texts before the "
                        f"tokenizer, which this toolkit does not do")
    add_special_tokens = True
    processing = sbert.get("processing_kwargs") or {}
    if not isinstance(processing, dict):
        raise FolderError(f"{model_dir / 'sentence_bert_config.json'}: processing_kwargs must be an object")
    for bucket, settings in processing.items():
        unknown = sorted(set(settings) - _HONOURED_PROCESSING) if isinstance(settings, dict) else [bucket]
        if unknown:
            raise FolderError(f"{model_dir / 'sentence_bert_config.json'}: processing_kwargs {bucket} "
                            f"{', '.join(unknown)} not honoured here")
        add_special_tokens = bool(settings.get("add_special_tokens", add_special_tokens))
    return dict(model=str(model_dir), kind="mlm", add_special_tokens=add_special_tokens,
                max_length=_max_length(model_dir, sbert), pooling="max", activation="log1p_relu",
                **common), str(pooling_path)


def _max_length(model_dir: Path, sbert: dict) -> int:
    """ST's own truncation length: sentence_bert_config's max_seq_length (older saves), else the tokenizer's
    model_max_length (6.x saves it there), capped by the model's positions."""
    positions = _optional_json(model_dir / "config.json").get("max_position_embeddings") or 512
    length = sbert.get("max_seq_length") or _optional_json(model_dir / "tokenizer_config.json").get(
        "model_max_length") or positions
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (length, positions)):
        raise FolderError(f"{model_dir}: max_seq_length / model_max_length / max_position_embeddings must be "
                          f"positive integers (found {length!r}, {positions!r}); fix the folder's JSON")
    return min(length, positions)


def dense_folder_fields(folder: Path) -> dict:
    """A dense sentence-transformers folder's own max length, pooling and normalisation (spec fields)."""
    max_length, pooling, normalize = 512, "mean", False
    sbert = folder / "sentence_bert_config.json"
    if sbert.exists():
        max_length = _json(sbert).get("max_seq_length") or max_length
    modules_path = folder / "modules.json"
    modules = _json(modules_path, list) if modules_path.exists() else []
    for module in modules:
        sub = module_folder(folder, module, modules_path)
        kind = str(module.get("type", ""))
        normalize = normalize or kind.endswith("Normalize")
        if kind.endswith("Pooling") and (sub / "config.json").exists():
            pooling = _pooling_mode(_json(sub / "config.json"), sub / "config.json")
    return dict(add_special_tokens=True, max_length=max_length, pooling=pooling, activation="none",
                normalize=normalize)


def _pooling_mode(config: dict, path: Path) -> str:
    modes = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
             "pooling_mode_lasttoken": "last", "pooling_mode_max_tokens": "max"}
    chosen = [mode for key, mode in modes.items() if config.get(key)]
    if len(chosen) != 1:
        raise FolderError(f"{path}: exactly one pooling mode must be on (found {chosen or 'none'})")
    return chosen[0]
