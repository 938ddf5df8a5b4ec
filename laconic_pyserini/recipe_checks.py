"""What a reproduction cell needs that may not be on this machine: the dataset's folder and qrels, the encoder
specs, model folders and modules a condition requires. Checked against local folders only, never the network."""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

from .data import DATA_ENV, DataError, resolve_dataset, with_gz
from .recipe import Condition, Dataset


def local_dataset(data: str, data_root: Path | None) -> Path | None:
    """The local BEIR folder for a dataset id, or None; never downloads (``resolve_dataset(download=False)``)."""
    try:
        return resolve_dataset(data, download=False, data_root=data_root)
    except DataError:
        return None


def missing_data(dataset: Dataset, data_root: Path | None) -> str | None:
    """Why this dataset cannot be scored here (no local folder, or no qrels for its split), or None."""
    folder = local_dataset(dataset.data, data_root)
    if folder is None:
        return f"data {dataset.data} not under {data_root or '$' + DATA_ENV}"
    if with_gz(folder / "qrels" / f"{dataset.split}.tsv") is None:
        return f"no qrels/{dataset.split}.tsv in {folder}"
    return None


def missing_requirements(condition: Condition, variables: dict[str, str] | None = None) -> str | None:
    """Why this condition cannot run on this machine (a module not written yet, weights not local), or None.

    Models are looked up the way the encoders find them (a path, ``$LACONIC_MODELS/<name>``), never on the hub;
    a model given as ``${var}`` must be set (``--var var=PATH``).
    """
    for module in condition.requires_modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not in this checkout"
    from .spec import known_specs, models_root, resolve_model_location

    specs = known_specs() if condition.requires_encoders else {}
    for name in condition.requires_encoders:
        if name not in specs:
            return f"no encoder spec {name!r} in encoders/ (add encoders/{name}.yaml)"
        for location in (specs[name].model, specs[name].tokenizer, specs[name].base_model):
            if location and not Path(resolve_model_location(location)).is_dir():
                return f"{location} not in {models_root()} (no network here)"
    values = condition.vars if variables is None else variables
    for template in condition.requires_models:
        model = string.Template(template).safe_substitute(values).strip()
        if not model or "$" in model:
            return f"no model given for {template}: pass --var {template.strip('${}')}=PATH"
        if not Path(resolve_model_location(model)).is_dir():
            return f"{model} not in {models_root()} (no network here)"
    return None
