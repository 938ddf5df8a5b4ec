"""Reproduction recipes (``eval/*.yaml``): datasets × conditions, each condition with its commands and the scores
it is expected to reach, and the bookkeeping the runner needs (tolerances, CQADupStack-style groups, averages).

A recipe is data, read once and checked here so that a typo fails with the file and the place, not halfway
through a long run. Command templates use ``${name}`` placeholders (as pyserini's 2CR YAML does):

``${dataset}``  the dataset's short name (``scifact``)       ``${data}``  what the CLIs take (``beir/scifact``)
``${split}``    the qrels split (``test``; MS MARCO: ``dev``)   ``${work}``  a folder for this cell's files
``${run}``      the TREC run the cell is scored on             ``${threads}`` and any ``vars`` of the recipe,
                                                               the dataset or the condition (``--var`` overrides)
A condition's ``index: NAME`` puts the commands of the index recipe ``index_recipes/NAME.yaml`` before its own
steps. Its ``requires`` (encoder specs, model folders, modules) decides whether it can run here, checked
against local folders only (:mod:`laconic_pyserini.recipe_checks`). This module starts no JVM and imports
neither torch nor pyserini.
"""

from __future__ import annotations

import os
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LaconicError
from .eval import DEFAULT_MEASURES
from .recipe_schema import check_recipe
from .index.recipe import IndexRecipeError, load_index_recipe, recipe_path, recipe_steps
from .shipped import resolve_recipe, shipped_recipes
from .yaml_file import read_yaml_mapping


class RecipeError(LaconicError, ValueError):
    """A recipe that cannot be used as written; the message names the file and the entry."""


@dataclass(frozen=True)
class Tolerance:
    """Absolute distance to the expected score (at 4 decimals) for OK, and the looser one for OKish."""

    ok: float = 0.0
    okish: float = 0.0005

    def verdict(self, obtained: float, expected: float) -> str:
        distance = abs(round(obtained, 4) - expected)
        # 4-decimal values differ by float noise around exact multiples of 0.0001.
        if distance <= self.ok + 1e-9:
            return "OK"
        if distance <= self.okish + 1e-9:
            return "OKish"
        return "FAIL"


@dataclass(frozen=True)
class Dataset:
    name: str
    data: str
    split: str = "test"
    vars: dict[str, str] = field(default_factory=dict)
    note: str = ""
    documents: int | None = None  # the corpus size, which an index of it must hold exactly


@dataclass(frozen=True)
class Step:
    command: str
    skip_if_exists: str | None = None  # a rerun skips the step when this path exists


@dataclass(frozen=True)
class Condition:
    name: str
    title: str
    source: str
    steps: tuple[Step, ...]
    expected: dict[str, dict[str, float]]
    tolerance: Tolerance
    requires_encoders: tuple[str, ...] = ()
    requires_models: tuple[str, ...] = ()
    requires_modules: tuple[str, ...] = ()
    vars: dict[str, str] = field(default_factory=dict)
    expected_averages: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""
    approximates: str | None = None  # the exact condition shown beside; ${exact_work}: its cell (its vectors, index)
    index: str | None = None  # the index recipe (index_recipes/NAME.yaml) whose commands open the steps


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    title: str
    metrics: tuple[str, ...]
    evaluate: str
    datasets: dict[str, Dataset]
    groups: dict[str, tuple[str, ...]]
    averages: dict[str, tuple[str, ...]]
    conditions: dict[str, Condition]
    vars: dict[str, str]
    conventions: str = ""

    def group_of(self, dataset: str) -> str | None:
        return next((g for g, members in self.groups.items() if dataset in members), None)

    def expand_datasets(self, names: list[str] | None) -> list[str]:
        """Dataset names in recipe order; a group name stands for its members."""
        if not names:
            return list(self.datasets)
        wanted: set[str] = set()
        for name in names:
            if name in self.groups:
                wanted.update(self.groups[name])
            elif name in self.datasets:
                wanted.add(name)
            else:
                raise RecipeError(f"{self.path}: no dataset or group {name!r}; "
                                  f"choose from {sorted(self.datasets) + sorted(self.groups)}")
        return [d for d in self.datasets if d in wanted]

    def expand_conditions(self, names: list[str] | None) -> list[str]:
        if not names:
            return list(self.conditions)
        for name in names:
            if name not in self.conditions:
                raise RecipeError(f"{self.path}: no condition {name!r}; choose from {list(self.conditions)}")
        return [c for c in self.conditions if c in names]

    def variables(self, condition: Condition, dataset: Dataset, work: str) -> dict[str, str]:
        values = {**self.vars, **dataset.vars, **condition.vars,
                  "dataset": dataset.name, "data": dataset.data, "split": dataset.split, "work": work,
                  "condition": condition.name}
        values["run"] = f"{work}/run.{condition.name}.{dataset.name}.txt"
        if condition.approximates:  # one encoding, two searches: the exact cell's folder
            values["exact_work"] = str(Path(work).parent.parent / condition.approximates / Path(work).name)
        return values

    def render(self, template: str, condition: Condition, dataset: Dataset, work: str,
               overrides: dict[str, str] | None = None, *, quote: bool = True) -> str:
        """The template with its ``${name}`` values; each value shell-quoted (``quote``) so that a path with a
        space stays one argument and a ``--var`` value cannot add options. ``quote=False`` is for plain paths."""
        values = {**self.variables(condition, dataset, work), **(overrides or {})}
        if quote:
            values = {name: shlex.quote(str(value)) for name, value in values.items()}
        try:
            return string.Template(template).substitute(values)
        except KeyError as exc:
            raise RecipeError(f"{self.path}: condition {condition.name!r} uses ${{{exc.args[0]}}}, which neither "
                              f"the recipe, dataset {dataset.name!r} nor the condition defines (add it to a "
                              f"'vars' mapping)") from None
        except ValueError as exc:
            raise RecipeError(f"{self.path}: condition {condition.name!r}: bad placeholder ({exc}); "
                              "write a literal $ as $$") from None


# ------------------------------------------------------------------------------------------------ loading


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check a recipe (a path, or a shipped one's name: ``beir``); errors name the file and the entry."""
    path = resolve_recipe(path)
    raw = read_yaml_mapping(path, RecipeError, missing="name a recipe file, or a shipped recipe by name: "
                            + ", ".join(shipped_recipes()), shape="'datasets' and 'conditions'")
    where = str(path)
    check_recipe(raw, where, RecipeError)
    metrics = tuple(raw.get("metrics") or DEFAULT_MEASURES)
    datasets = {}
    for i, entry in enumerate(_list(raw, "datasets", where)):
        ds = _dataset(entry, f"{where}: datasets[{i}]")
        if ds.name in datasets:
            raise RecipeError(f"{where}: dataset {ds.name!r} is listed twice")
        datasets[ds.name] = ds
    groups = {g: tuple(m) for g, m in (raw.get("groups") or {}).items()}
    for g, members in groups.items():
        _known(members, datasets, f"{where}: groups.{g}")
    averages = {a: tuple(m) for a, m in (raw.get("averages") or {}).items()}
    for a, members in averages.items():
        _known(members, {**datasets, **groups}, f"{where}: averages.{a}")
    default_tol = _tolerance(raw.get("tolerance"), Tolerance(), f"{where}: tolerance")
    conditions = {}
    for i, entry in enumerate(_list(raw, "conditions", where)):
        cond = _condition(entry, f"{where}: conditions[{i}]", metrics, default_tol)
        _known(cond.expected, datasets, f"{where}: condition {cond.name!r} expected")
        _known(cond.expected_averages, {**averages, **groups}, f"{where}: condition {cond.name!r} expected_averages")
        if cond.name in conditions:
            raise RecipeError(f"{where}: condition {cond.name!r} is listed twice")
        conditions[cond.name] = cond
    for cond in conditions.values():
        if cond.approximates is not None and conditions.get(cond.approximates, cond) is cond:
            raise RecipeError(f"{where}: condition {cond.name!r} approximates {cond.approximates!r}, which is not "
                              "another condition of this recipe")
    evaluate = raw.get("evaluate")
    if not isinstance(evaluate, str) or "${run}" not in evaluate:
        raise RecipeError(f"{where}: 'evaluate' must be a command template that scores ${{run}}")
    return Recipe(path=path, name=str(raw.get("name") or path.stem), title=str(raw.get("title") or path.stem),
                  metrics=metrics, evaluate=evaluate, datasets=datasets, groups=groups, averages=averages,
                  conditions=conditions, vars=_strings(raw.get("vars"), f"{where}: vars"),
                  conventions=str(raw.get("conventions") or ""))


def _list(raw: dict, key: str, where: str) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise RecipeError(f"{where}: '{key}' must be a non-empty list")
    return value


def _known(names, known: dict, where: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RecipeError(f"{where}: unknown {unknown}; define them under 'datasets' (or 'groups')")


def _strings(value, where: str) -> dict[str, str]:
    if value is not None and not isinstance(value, dict):
        raise RecipeError(f"{where}: must be a mapping of names to strings")
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}


def _dataset(entry, where: str) -> Dataset:
    if not isinstance(entry, dict) or "name" not in entry:
        raise RecipeError(f"{where}: a dataset needs at least a 'name'")
    name = str(entry["name"])
    documents = entry.get("documents")
    if documents is not None and (isinstance(documents, bool) or not isinstance(documents, int) or documents < 1):
        raise RecipeError(f"{where} ({name}).documents: the corpus size, a positive integer, not {documents!r}")
    return Dataset(name=name, data=str(entry.get("data") or f"beir/{name}"), split=str(entry.get("split", "test")),
                   vars=_strings(entry.get("vars"), f"{where} ({name}).vars"), note=str(entry.get("note") or ""),
                   documents=documents)


def _tolerance(value, default: Tolerance, where: str) -> Tolerance:
    if value is None:
        return default
    if not isinstance(value, dict) or set(value) - {"ok", "okish"}:
        raise RecipeError(f"{where}: write a tolerance as {{ok: 0.0, okish: 0.0005}}")
    ok = float(value.get("ok", default.ok))
    okish = float(value.get("okish", max(default.okish, ok)))
    if not 0 <= ok <= okish:
        raise RecipeError(f"{where}: need 0 <= ok <= okish, got ok={ok} okish={okish}")
    return Tolerance(ok, okish)


def _scores(value, where: str, metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``{dataset: {metric: value}}``; empty cells (null) are dropped rather than guessed."""
    out: dict[str, dict[str, float]] = {}
    for key, scores in (value or {}).items():
        if scores is None:
            continue
        if not isinstance(scores, dict):
            raise RecipeError(f"{where}.{key}: expected a mapping like {{nDCG@10: 0.6789}}")
        unknown = set(scores) - set(metrics)
        if unknown:
            raise RecipeError(f"{where}.{key}: metrics {sorted(unknown)} are not among the recipe's {list(metrics)}")
        kept = {}
        for metric, number in scores.items():
            if number is None:
                continue
            if not isinstance(number, (int, float)) or not 0 <= number <= 1:
                raise RecipeError(f"{where}.{key}.{metric}: {number!r} is not a score in [0, 1]")
            kept[metric] = float(number)
        if kept:
            out[str(key)] = kept
    return out


def _condition(entry, where: str, metrics: tuple[str, ...], default_tol: Tolerance) -> Condition:
    if not isinstance(entry, dict) or "name" not in entry:
        raise RecipeError(f"{where}: a condition needs a 'name'")
    name = str(entry["name"])
    where = f"{where} ({name})"
    if not entry.get("source"):
        raise RecipeError(f"{where}: say where the expected numbers come from ('source')")
    index = None if entry.get("index") is None else str(entry["index"])
    steps = _index_steps(index, where, entry.get("approximates")) if index else []
    for j, step in enumerate(entry.get("steps") or []):
        if isinstance(step, str):
            step = {"command": step}
        if not isinstance(step, dict) or not isinstance(step.get("command"), str):
            raise RecipeError(f"{where}.steps[{j}]: a step is a command string or "
                              "{command: ..., skip_if_exists: PATH}")
        steps.append(Step(command=" ".join(step["command"].split()), skip_if_exists=step.get("skip_if_exists")))
    if not steps:
        raise RecipeError(f"{where}: no 'steps'; every condition says how to produce its run")
    requires = entry.get("requires") or {}
    return Condition(
        name=name, title=str(entry.get("title") or name), source=str(entry["source"]).strip(), steps=tuple(steps),
        expected=_scores(entry.get("expected"), f"{where}.expected", metrics),
        expected_averages=_scores(entry.get("expected_averages"), f"{where}.expected_averages", metrics),
        tolerance=_tolerance(entry.get("tolerance"), default_tol, f"{where}.tolerance"),
        requires_encoders=tuple(requires.get("encoders") or ()), requires_models=tuple(requires.get("models") or ()),
        requires_modules=tuple(requires.get("modules") or ()),
        vars=_strings(entry.get("vars"), f"{where}.vars"), note=str(entry.get("note") or "").strip(),
        approximates=None if entry.get("approximates") is None else str(entry["approximates"]), index=index)


def _index_steps(name: str, where: str, approximates) -> list[Step]:
    """The encode and index steps of the index recipe ``name``, into the cell's folder (or the exact cell's)."""
    try:
        recipe = load_index_recipe(recipe_path(name))
    except IndexRecipeError as exc:
        raise RecipeError(f"{where}.index: {exc}") from None
    folder = "${exact_work}" if approximates else "${work}"
    return [Step(command, skip_if_exists) for command, skip_if_exists in recipe_steps(recipe, folder)]


# ------------------------------------------------------------------------------------------------ averages


def mean_of(values: dict[str, dict[str, float]], members: tuple[str, ...], metric: str) -> float | None:
    """The mean over ``members`` of one metric, or None unless every member has it (no partial averages)."""
    numbers = [values.get(m, {}).get(metric) for m in members]
    if not numbers or any(n is None for n in numbers):
        return None
    return sum(numbers) / len(numbers)


def summarize(recipe: Recipe, values: dict[str, dict[str, float]],
              published: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Group means (CQADupStack = mean of its forums) and the recipe's averages, computed from cell values.

    An average counts a group once, by its mean, as BEIR and MTEB do, and is left out unless complete. Where a
    source publishes a group mean or an average but not its parts (MTEB's CQADupstack), ``published`` fills in
    what cannot be computed.
    """
    published = published or {}
    out: dict[str, dict[str, float]] = {}
    with_groups = dict(values)
    for group, members in recipe.groups.items():
        means = {m: v for m in recipe.metrics if (v := mean_of(values, members, m)) is not None}
        means = means or published.get(group, {})
        if means:
            out[group] = with_groups[group] = means
    for name, members in recipe.averages.items():
        means = {m: v for m in recipe.metrics if (v := mean_of(with_groups, members, m)) is not None}
        means = means or published.get(name, {})
        if means:
            out[name] = means
    return out


# ------------------------------------------------------------------------------------------------ cells

#: Where ``reproduce`` writes its cells (``REPORT/RECIPE/CONDITION/DATASET``), and each cell's scores file.
DEFAULT_REPORT = Path("runs/reproduce")
SCORES_FILE = "scores.json"


def work_dir(report: Path, recipe: Recipe, condition: str, dataset: str) -> Path:
    """The folder one (condition, dataset) cell runs in."""
    return report / recipe.name / condition / dataset


def cell_commands(recipe: Recipe, condition: Condition, dataset: Dataset, work: Path,
                  overrides: dict[str, str] | None = None) -> tuple[list[tuple[str, str | None]], str]:
    """The rendered ``(command, skip_if_exists)`` steps and the evaluation command of one cell."""
    steps = [(recipe.render(s.command, condition, dataset, str(work), overrides),
              recipe.render(s.skip_if_exists, condition, dataset, str(work), overrides, quote=False)
              if s.skip_if_exists else None)
             for s in condition.steps]
    return steps, recipe.render(recipe.evaluate, condition, dataset, str(work), overrides)
