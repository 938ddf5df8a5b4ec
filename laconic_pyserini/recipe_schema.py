"""The keys a reproduction recipe may hold, and the type of each: checked before anything in it is used.

A misspelt key (``expectd:``) would otherwise be ignored -- silently dropping the score check it was meant to
carry -- and a value of the wrong type (``metrics: 5``, ``groups`` as a list, ``steps: "cmd"``) would end in a
traceback or, worse, in a step per character. An unknown key is an error that names the closest known one.
"""

from __future__ import annotations

import difflib
import shlex

_SCALAR = (str, int, float)  # what a name, a note or a path may be written as in YAML (``split: 2019``)

TOP = {"name": _SCALAR, "title": _SCALAR, "metrics": list, "evaluate": str, "datasets": list, "groups": dict,
       "averages": dict, "tolerance": dict, "conditions": list, "vars": dict, "conventions": _SCALAR}
DATASET = {"name": _SCALAR, "data": _SCALAR, "split": _SCALAR, "vars": dict, "note": _SCALAR, "documents": int}
CONDITION = {"name": _SCALAR, "title": _SCALAR, "source": _SCALAR, "steps": list, "expected": dict,
             "expected_averages": dict, "tolerance": dict, "requires": dict, "vars": dict, "note": _SCALAR,
             "approximates": _SCALAR, "index": _SCALAR}
STEP = {"command": str, "skip_if_exists": _SCALAR}
REQUIRES = {"encoders": list, "models": list, "modules": list}
TOLERANCE = {"ok": (int, float), "okish": (int, float)}


def _type_name(kind) -> str:
    names = {list: "a list", dict: "a mapping", str: "a string", int: "an integer", _SCALAR: "a string or number",
             (int, float): "a number"}
    return names.get(kind, str(kind))


def check_keys(mapping: dict, schema: dict, where: str, error: type[Exception]) -> None:
    """Refuse a key ``schema`` does not know (naming the closest) or a value of another type (null is allowed)."""
    for key, value in mapping.items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise error(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(schema)}")
        kind = schema[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise error(f"{where}.{key}: expected {_type_name(kind)}, found {type(value).__name__} {value!r:.60}")


def _each(value, schema: dict, where: str, error: type[Exception]) -> None:
    for i, entry in enumerate(value or []):
        if not isinstance(entry, dict):
            raise error(f"{where}[{i}]: expected a mapping, found {type(entry).__name__} {entry!r:.60}")
        check_keys(entry, schema, f"{where}[{i}]", error)


def _members(value, where: str, error: type[Exception]) -> None:
    for name, members in (value or {}).items():
        if not isinstance(members, list) or not all(isinstance(m, _SCALAR) for m in members):
            raise error(f"{where}.{name}: expected a list of dataset names")


def check_recipe(raw: dict, where: str, error: type[Exception]) -> None:
    """Check every level of a recipe's mapping against the schema above; ``error`` is raised for the first fault."""
    check_keys(raw, TOP, where, error)
    if not all(isinstance(m, str) for m in raw.get("metrics") or []):
        raise error(f"{where}.metrics: expected a list of measure names (e.g. [nDCG@10, R@100])")
    _members(raw.get("groups"), f"{where}.groups", error)
    _members(raw.get("averages"), f"{where}.averages", error)
    check_keys(raw.get("tolerance") or {}, TOLERANCE, f"{where}.tolerance", error)
    _each(raw.get("datasets"), DATASET, f"{where}.datasets", error)
    _each(raw.get("conditions"), CONDITION, f"{where}.conditions", error)
    for i, condition in enumerate(raw.get("conditions") or []):
        at = f"{where}.conditions[{i}]"
        check_keys(condition.get("requires") or {}, REQUIRES, f"{at}.requires", error)
        check_keys(condition.get("tolerance") or {}, TOLERANCE, f"{at}.tolerance", error)
        for j, step in enumerate(condition.get("steps") or []):
            if isinstance(step, dict):
                check_keys(step, STEP, f"{at}.steps[{j}]", error)
            command = step.get("command") if isinstance(step, dict) else step
            if isinstance(command, str):
                try:
                    shlex.split(command)
                except ValueError as exc:  # "No closing quotation": the step could never run
                    raise error(f"{at}.steps[{j}]: {exc} in {command!r}; close the quote") from None
