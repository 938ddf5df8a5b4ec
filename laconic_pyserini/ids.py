"""TREC-safe ids: the one rule every reader applies where a document or query id enters the toolkit.

Ids end up as columns of whitespace-separated TREC runs and qrels, as Lucene and faiss doc ids and as JSON keys,
so an id must be a non-empty string with no whitespace anywhere (a padded ``" d1 "`` is refused, never trimmed:
trimming would silently join two ids). A JSON integer is read as its decimal string, as BEIR does; any other JSON
value (``true``, ``1.5``, ``[1, 2]``, ``{...}``, ``null``) is refused. Errors name the file and the line.
"""

from __future__ import annotations

import os

from .errors import DataError


def trec_id(value: object, path: str | os.PathLike, line: int | None, what: str = "document") -> str:
    """``value`` as an id string, or a DataError naming ``path:line`` and what a valid id looks like."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    fix = f"{what} ids must be non-empty strings (or JSON integers) without spaces, tabs or newlines"
    if not isinstance(value, str):
        raise DataError(path, line, f"{what} id {_shown(value)} is a JSON {_json_type(value)}, not a string", fix)
    if not value:
        raise DataError(path, line, f"{what} id is empty", fix)
    if any(c.isspace() for c in value):
        raise DataError(path, line, f"{what} id {value!r} contains whitespace", fix)
    return value


def _json_type(value: object) -> str:
    names = {bool: "boolean", float: "number", list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    import json

    try:
        return json.dumps(value)[:40]
    except (TypeError, ValueError):
        return repr(value)[:40]
