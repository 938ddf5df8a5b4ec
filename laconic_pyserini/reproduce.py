"""Run a reproduction recipe (2CR style): every cell's commands as a user would type them, scored and compared.

    python -m laconic_pyserini.reproduce --recipe eval/beir.yaml [--list] [--condition C ...] [--dataset D ...]
        [--dry-run] [--data-root DIR] [--report DIR] [--page FILE] [--threads N] [--var NAME=VALUE ...]

Each (condition, dataset) cell runs its command templates as subprocesses (``python -m laconic_pyserini...``),
then the recipe's ``evaluate`` command, and compares the printed scores with the expected ones:
OK within the condition's tolerance, OKish within its looser one, FAIL beyond; SKIP (with the reason) where the
weights, the data or a module is not on this machine, checked without touching the network. ``--dry-run`` prints
every cell's commands, with that reason as a note beside a cell that would be skipped here. Outputs go to
``--report DIR/<recipe>/<condition>/<dataset>/``; a rerun reuses every step whose output already exists.
The exit status is 1 when a cell that ran failed (or its command did), 2 for a bad recipe or arguments.
``--list`` prints every condition and dataset with the expected numbers and their source; ``--page`` writes the
markdown reproduction page (commands, expected and obtained numbers side by side) from the recipe and the report.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .data import DATA_ENV, default_data_root
from .errors import cli
from .outputs import discard, open_folder, write_json_atomic
from .recipe import (DEFAULT_REPORT, SCORES_FILE, Condition, Dataset, Recipe, RecipeError, cell_commands,
                     load_recipe, summarize, work_dir)
from .recipe_checks import missing_data, missing_requirements

logger = logging.getLogger(__name__)

#: What a cell folder's manifest.json says it is (:mod:`laconic_pyserini.outputs`).
CELL_KIND = "reproduce-cell"
LOG_FILE = "log.txt"
FAILED = ("FAIL", "ERROR")
_RANK = {"OK": 0, "OKish": 1, "FAIL": 2}


@dataclass
class Cell:
    """The outcome of one (condition, dataset) cell."""

    condition: str
    dataset: str
    status: str  # OK | OKish | FAIL | ERROR | SKIP | DRY | RAN (scored, nothing to compare with)
    scores: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    commands: list[str] = field(default_factory=list)


def parse_scores(output: str, metrics: Sequence[str]) -> dict[str, float]:
    """``measure<TAB>value`` lines as ``laconic_pyserini.eval`` prints them."""
    scores = {}
    for line in output.splitlines():
        name, _, value = line.strip().partition("\t")
        if name in metrics:
            scores[name] = float(value)
    return scores


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    # The page says `python`; here it must be this interpreter, whatever `python` is on PATH.
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def _run_logged(command: str, log_path: Path, env: dict[str, str], *, capture: bool = False) -> tuple[int, str]:
    """Run one command, its output appended to the cell's log as it comes (``tail -f`` works during long steps);
    with ``capture`` its stdout is returned too. Returns (exit status, stdout or "")."""
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {command}\n")
        log.flush()
        if capture:
            proc = subprocess.run(_argv(command), stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            log.write(proc.stdout)
        else:
            proc = subprocess.run(_argv(command), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.write(f"[exit {proc.returncode}, {time.perf_counter() - start:.1f} s]\n\n")
    return proc.returncode, proc.stdout if capture else ""


def run_cell(recipe: Recipe, condition: Condition, dataset: Dataset, *, report: Path, data_root: Path | None,
             dry_run: bool = False, overrides: dict[str, str] | None = None,
             echo: Callable[[str], None] = print) -> Cell:
    """Run (or reuse) one cell's steps, score its run, compare with the expected numbers."""
    work = work_dir(report, recipe, condition.name, dataset.name)
    steps, evaluate = cell_commands(recipe, condition, dataset, work, overrides)
    cell = Cell(condition.name, dataset.name, "DRY", commands=[c for c, _ in steps] + [evaluate])
    reason = (missing_requirements(condition, {**recipe.vars, **condition.vars, **(overrides or {})})
              or missing_data(dataset, data_root))
    if dry_run:  # every command is shown, runnable here or not: a dry run plans a run on another machine too
        cell.reason = reason or ""
        if reason:
            echo(f"  note: would be skipped on this machine: {reason}")
        for command in cell.commands:
            echo(f"  {command}")
        return cell
    if reason:
        cell.status, cell.reason = "SKIP", reason
        return cell
    # Cell folders of earlier versions carry no manifest; their log says they are ours.
    open_folder(work, CELL_KIND, flag="--report", ours=lambda folder: (folder / LOG_FILE).is_file(),
                recipe=recipe.name, condition=condition.name, dataset=dataset.name)
    discard(work, SCORES_FILE, kind=CELL_KIND)  # a cell that fails now must not show its last success
    if condition.approximates:  # its steps encode and index into the exact cell (${exact_work}), once for both
        open_folder(work_dir(report, recipe, condition.approximates, dataset.name), CELL_KIND, flag="--report",
                    ours=lambda folder: (folder / LOG_FILE).is_file(), recipe=recipe.name,
                    condition=condition.approximates, dataset=dataset.name)
    env = dict(os.environ)
    if data_root is not None:
        env[DATA_ENV] = str(data_root)
    log_path = work / LOG_FILE
    echo(f"  log: {log_path}")
    for command, skip_if_exists in steps:
        if skip_if_exists and Path(skip_if_exists).exists():
            echo(f"  reuse {skip_if_exists}")
            continue
        echo(f"  $ {command}")
        code, _ = _run_logged(command, log_path, env)
        if code != 0:
            cell.status, cell.reason = "ERROR", f"exit {code}: see {log_path}"
            return cell
    code, output = _run_logged(evaluate, log_path, env, capture=True)
    cell.scores = parse_scores(output, recipe.metrics)
    if code != 0 or not cell.scores:
        cell.status, cell.reason = "ERROR", f"evaluation gave no scores (exit {code}): see {log_path}"
        return cell
    expected = condition.expected.get(dataset.name, {})
    cell.verdicts = {m: condition.tolerance.verdict(cell.scores[m], e) for m, e in expected.items()
                     if m in cell.scores}
    cell.status = max(cell.verdicts.values(), key=_RANK.__getitem__) if cell.verdicts else "RAN"
    record = {"recipe": recipe.name, "package_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **asdict(cell), "expected": expected}
    write_json_atomic(work / SCORES_FILE, record)
    return cell


def run_recipe(recipe: Recipe, conditions: list[str], datasets: list[str], *, report: Path = DEFAULT_REPORT,
               data_root: Path | None = None, dry_run: bool = False, overrides: dict[str, str] | None = None,
               echo: Callable[[str], None] = print) -> list[Cell]:
    cells = []
    bar, echo = _cells_bar(len(conditions) * len(datasets), echo, enabled=False if dry_run else None)
    for name in conditions:
        condition = recipe.conditions[name]
        for dataset_name in datasets:
            echo(f"[{name} / {dataset_name}]")
            cell = run_cell(recipe, condition, recipe.datasets[dataset_name], report=report, data_root=data_root,
                            dry_run=dry_run, overrides=overrides, echo=echo)
            if cell.status == "SKIP":
                echo(f"  SKIP: {cell.reason}")
            elif cell.scores:
                echo("  " + "  ".join(_score_text(cell, m, condition) for m in recipe.metrics if m in cell.scores))
            elif cell.status == "ERROR":
                echo(f"  ERROR: {cell.reason}")
            cells.append(cell)
            bar.update()
    bar.close()
    return cells


def _cells_bar(total: int, echo: Callable[[str], None], *, enabled: bool | None):
    """A bar of cells done / total (rate, ETA; on a terminal only) and an ``echo`` that lifts it off to write."""
    from .console import progress_bar

    bar = progress_bar(total=total, desc="cells", unit="cell", enabled=enabled)

    def lifted(line: str) -> None:
        with bar.external_write_mode():
            echo(line)

    return bar, lifted


def _score_text(cell: Cell, metric: str, condition: Condition) -> str:
    text = f"{metric} {cell.scores[metric]:.4f}"
    verdict = cell.verdicts.get(metric)
    if verdict:
        expected = condition.expected[cell.dataset][metric]
        text += f" {verdict}" + ("" if verdict == "OK" else f" (expected {expected:.4f})")
    return text


# ------------------------------------------------------------------------------------------------ printing


def format_matrix(recipe: Recipe, cells: list[Cell], metric: str = "nDCG@10") -> str:
    """Datasets × conditions, one metric, each cell with its verdict; group means and averages below."""
    conditions = list(dict.fromkeys(c.condition for c in cells))
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    by_key = {(c.condition, c.dataset): c for c in cells}
    width = max([16] + [len(c) + 2 for c in conditions])
    label = max([12] + [len(d) + 2 for d in datasets] + [len(a) + 2 for a in [*recipe.averages, *recipe.groups]])
    lines = [f"{metric:<{label}}" + "".join(f"{c:<{width}}" for c in conditions)]
    for dataset in datasets:
        row = f"{dataset:<{label}}"
        for condition in conditions:
            cell = by_key.get((condition, dataset))
            text = "" if cell is None else cell.status
            if cell is not None and metric in cell.scores:
                text = f"{cell.scores[metric]:.4f} {cell.verdicts.get(metric, '')}"
            row += f"{text.strip():<{width}}"
        lines.append(row.rstrip())
    summaries = {c: summarize(recipe, {d: by_key[c, d].scores for d in datasets if (c, d) in by_key})
                 for c in conditions}
    names = [n for n in [*recipe.groups, *recipe.averages] if any(n in s for s in summaries.values())]
    for name in names:
        row = f"{name:<{label}}"
        for condition in conditions:
            value = summaries[condition].get(name, {}).get(metric)
            text = "" if value is None else f"{value:.4f}"
            spec = recipe.conditions[condition]
            expected = summarize(recipe, spec.expected, spec.expected_averages).get(name, {}).get(metric)
            if value is not None and expected is not None:
                text += " " + spec.tolerance.verdict(value, expected)
            row += f"{text:<{width}}"
        lines.append(row.rstrip())
    skipped = {}
    for cell in cells:
        if cell.status in ("SKIP", "ERROR"):
            skipped.setdefault(f"{cell.status} {cell.reason}", []).append(f"{cell.condition}/{cell.dataset}")
    for reason, where in skipped.items():
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        lines.append(f"  {reason}: {shown}")
    okish = {c.condition: recipe.conditions[c.condition].tolerance for c in cells if c.status == "OKish"}
    for condition, tol in okish.items():
        lines.append(f"  OKish ({condition}): within ±{tol.okish:g} of the expected score but not within ±{tol.ok:g}")
    return "\n".join(lines)


def format_listing(recipe: Recipe, overrides: dict[str, str] | None = None) -> str:
    """Every condition with its source, tolerance, runnability here, and expected numbers per dataset."""
    metrics = recipe.metrics
    lines = [f"{recipe.title} ({recipe.path}); metrics {', '.join(metrics)}; conventions: "
             "docs/benchmark-conventions.md", ""]
    lines.append(f"datasets ({len(recipe.datasets)}): name, data (what the CLIs read), split, note")
    lines += [f"   {d.name:<26}{d.data:<30}{d.split:<6}{d.note}".rstrip() for d in recipe.datasets.values()]
    for group, members in recipe.groups.items():
        lines.append(f"group {group} = mean of {len(members)}: {', '.join(members)}")
    for name, members in recipe.averages.items():
        lines.append(f"average {name} = mean of {len(members)}: {', '.join(members)}")
    for condition in recipe.conditions.values():
        reason = missing_requirements(condition, {**recipe.vars, **condition.vars, **(overrides or {})})
        lines += ["", f"== {condition.name}: {condition.title}",
                  f"   source: {condition.source}",
                  f"   tolerance: OK within ±{condition.tolerance.ok:g}, OKish within ±{condition.tolerance.okish:g}",
                  f"   runnable here: {'no (' + reason + ')' if reason else 'yes, where the data is local'}"]
        if condition.note:
            lines.append(f"   note: {condition.note}")
        lines.append(f"   {'dataset':<26}" + "".join(f"{m:>9}" for m in metrics))
        expected = condition.expected
        for dataset in recipe.datasets:
            lines.append(f"   {dataset:<26}" + "".join(_num(expected.get(dataset, {}).get(m)) for m in metrics))
        summary = summarize(recipe, expected, condition.expected_averages)
        for name in [*recipe.groups, *recipe.averages]:
            if name in summary:
                how = "published" if name in condition.expected_averages else "computed from the cells"
                lines.append(f"   {name:<26}" + "".join(_num(summary[name].get(m)) for m in metrics) + f"   ({how})")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return f"{value:>9.4f}" if value is not None else f"{'-':>9}"


# ------------------------------------------------------------------------------------------------ CLI


@cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laconic_pyserini.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="recipe YAML file, or a shipped recipe by name (beir, mteb-retrieval)")
    parser.add_argument("--list", action="store_true", help="print conditions, datasets and expected numbers")
    parser.add_argument("--condition", action="append", help="condition(s) to run (repeat or comma-separate)")
    parser.add_argument("--dataset", action="append", help="dataset(s) or group(s) to run (repeat or comma-separate)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--data-root", type=Path, help=f"folder of BEIR datasets (default ${DATA_ENV} or "
                        "../shared/datasets)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where cells write (default %(default)s)")
    parser.add_argument("--page", type=Path, help="also write the markdown reproduction page to this file")
    parser.add_argument("--threads", help="value of ${threads} in the commands (same as --var threads=N)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="set a ${NAME} of the command templates, e.g. --var dense_1b=/path/to/model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    recipe = load_recipe(args.recipe)
    data_root = args.data_root or default_data_root()
    overrides = _variables(args.var, args.threads)
    if args.list:
        print(format_listing(recipe, overrides))
        return 0
    conditions = recipe.expand_conditions(_split(args.condition))
    datasets = recipe.expand_datasets(_split(args.dataset))
    if args.page:
        from .reproduce_page import claim_page

        claim_page(args.page, args.recipe)  # before any cell runs
    cells = run_recipe(recipe, conditions, datasets, report=args.report, data_root=data_root,
                       dry_run=args.dry_run, overrides=overrides)
    if args.page:
        from .reproduce_page import write_page

        write_page(recipe, args.page, report=args.report, argv=sys.argv[1:] if argv is None else list(argv))
        print(f"page: {args.page}")
    if not args.dry_run:
        print()
        print(format_matrix(recipe, cells))
    return 1 if any(c.status in FAILED for c in cells) else 0


def _variables(pairs: list[str], threads: str | None) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise RecipeError(f"--var {pair!r}: write NAME=VALUE")
        values[name.strip()] = value
    if threads:
        values["threads"] = threads
    return values


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


if __name__ == "__main__":
    sys.exit(main())
