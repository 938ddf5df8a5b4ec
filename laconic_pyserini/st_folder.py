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

import json
from pathlib import Path


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


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FolderError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _optional_json(path: Path) -> dict:
    return _json(path) if path.exists() else {}


def sparse_encoder_folder_spec(folder: Path) -> tuple[dict, str] | None:
    """The encoder spec fields of a sentence-transformers SparseEncoder folder and the file they come from; None
    when ``folder`` is not one (a dense SentenceTransformer folder, a plain model folder). This module sits below
    :mod:`.spec`, which builds the :class:`~laconic_pyserini.spec.EncoderSpec` from the fields."""
    modules_path = folder / "modules.json"
    if not modules_path.exists():
        return None
    st_config = _optional_json(folder / "config_sentence_transformers.json")
    modules = _json(modules_path)
    classes = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    sparse_classes = {"SpladePooling", "MLMTransformer", "LaconicPooling", "LaconicTransformer"}
    if st_config.get("model_type") != "SparseEncoder" and not sparse_classes & set(classes):
        return None
    prompts = st_config.get("prompts") or {}
    document_prompt = next((prompts[name] for name in DOCUMENT_PROMPTS if name in prompts), "")
    common = dict(query_prefix=prompts.get("query") or "", passage_prefix=document_prompt or "",
                  top_k=st_config.get("max_active_dims"))
    paths = [folder / str(m.get("path", "")) for m in modules]
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
    for bucket, settings in (sbert.get("processing_kwargs") or {}).items():
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
    return int(min(length, positions))
