"""Datasets: BEIR folders, pyserini JSONL files and ir_datasets ids, read as streams.

A *source* is one of
- a BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv[.gz]``);
- a name (``scifact``, ``beir/scifact``) resolved under ``$LACONIC_DATA`` (default: ``../shared/datasets``
  next to the checkout when it exists), and otherwise through ``ir_datasets`` (which downloads);
- for corpora, a pyserini JSONL file (``{"id", "contents"}`` lines, optionally gzipped).

Topics and qrels (and the id rules they share with pre-encoded query files) are :mod:`laconic_pyserini.topics`.

Every malformed input raises :class:`DataError` naming the file, the line and what to do.
This module imports neither torch nor the JVM.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError  # noqa: F401  (callers import it from here)
from .ids import trec_id

DATA_ENV = "LACONIC_DATA"
IR_DATASETS_ALIASES = {"beir/webis-touche2020": "beir/webis-touche2020/v2"}
#: The longest line read from a corpus, topics, qrels or run file (4 MiB: a BEIR document is at most a few hundred
#: kB, Anserini refuses a string of 20 MB, and the encoders read the first few hundred tokens of a document).
MAX_LINE_BYTES = 4 << 20


@dataclass(frozen=True)
class Document:
    """One corpus document. Pyserini JSONL documents have an empty title and ``contents`` as text."""

    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Title and text joined with a space, as Anserini's BeirFlatCollection does (title omitted if empty)."""
        return f"{self.title} {self.text}" if self.title else self.text


# --------------------------------------------------------------------------------------------- paths


def default_data_root() -> Path | None:
    """``$LACONIC_DATA``, else ``../shared/datasets`` beside this checkout or the working directory."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for base in (here, Path.cwd()):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def with_gz(path: Path) -> Path | None:
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.exists() else None


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and with_gz(path / "corpus.jsonl") is not None


def resolve_dataset(source: str | os.PathLike, *, download: bool = True, data_root: Path | None = None) -> Path:
    """Turn a BEIR folder or a dataset name into a local BEIR folder.

    Names are looked up under the data root (``scifact`` or ``beir/scifact``); a name that is not there is
    fetched through ``ir_datasets`` and exported once to ``$LACONIC_DATA`` (or ``~/.cache/laconic-data``).
    With ``download=False`` only local folders count (a DataError otherwise): nothing touches the network.
    ``data_root`` replaces the default root (``$LACONIC_DATA`` or ``../shared/datasets``).
    """
    path = Path(source)
    if path.exists():
        if not is_beir_dir(path):
            raise DataError(path, None, "not a BEIR folder: corpus.jsonl[.gz] is missing",
                            "pass a folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
        return path
    name = str(source).strip("/")
    short = name.split("/", 1)[1] if name.startswith("beir/") else name
    root = data_root or default_data_root()
    candidates = [root / short, root / name, root / short.replace("/", "-")] if root is not None else []
    candidates.append(_export_dir(name))  # an earlier ir_datasets export
    for candidate in candidates:
        if is_beir_dir(candidate):
            return candidate
    if not download:
        raise DataError(name, None, f"dataset not found locally (looked under {root})",
                        "pass a BEIR folder or set LACONIC_DATA")
    from .ir_datasets_export import export_ir_datasets

    return export_ir_datasets(name, _ir_datasets_id(name), _export_dir(name), root)


def _ir_datasets_id(name: str) -> str:
    dataset_id = name if "/" in name else f"beir/{name}"
    # BEIR's Touche-2020 (the v2 judgements, which Anserini and MTEB score) is ir_datasets' .../v2.
    return IR_DATASETS_ALIASES.get(dataset_id, dataset_id)


def _export_dir(name: str) -> Path:
    """Where an ir_datasets dataset is exported as a BEIR folder (one folder per id)."""
    base = Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "laconic-data")
    return base / _ir_datasets_id(name).replace("/", "-")


# --------------------------------------------------------------------------------------------- reading


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of a plain or gzipped file; a damaged .gz, or a line longer than
    :data:`MAX_LINE_BYTES` (read no further than that), is a DataError at its line."""
    number = 0
    with _open_bytes(path) as f:
        try:
            while raw := f.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(path, number, f"the line is longer than {MAX_LINE_BYTES} bytes, the limit for "
                                    "one document, topic or run line", "split or shorten it; an encoder reads "
                                    "only the first few hundred tokens")
                yield number, raw
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(path, number + 1, f"the gzip stream is truncated or damaged ({exc})",
                            "download or copy the file again (gzip -t checks it)") from None


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        "re-encode the file as UTF-8") from None


def _is_blank(raw: bytes) -> bool:
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return not raw.strip()


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number, line without newline) for every non-blank line; bad UTF-8 raises DataError."""
    path = Path(path)
    for number, raw in _raw_lines(path):
        if not _is_blank(raw):
            yield number, _decode(path, number, raw).rstrip("\r\n")


def _parse_json(path: Path, number: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(path, number, f"not valid JSON ({exc.msg}, column {exc.colno})",
                        "fix or remove that line") from None
    if not isinstance(obj, dict):
        raise DataError(path, number, "a JSON line must be an object", "fix or remove that line")
    return obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every line of a JSONL file; malformed lines raise DataError."""
    path = Path(path)
    for number, line in iter_lines(path):
        yield number, _parse_json(path, number, line)


def corpus_file(source: str | os.PathLike) -> Path:
    """The JSONL file behind a corpus source (a BEIR folder, a name or a JSONL file)."""
    path = Path(source)
    if path.is_file():
        return path
    folder = resolve_dataset(source)
    found = with_gz(folder / "corpus.jsonl")
    assert found is not None  # resolve_dataset checked it
    return found


@dataclass(frozen=True)
class CorpusLine:
    """One non-blank corpus line: a document, or the error that makes it invalid."""

    ordinal: int  # 0-based among non-blank lines: what shard ranges and resume points count
    number: int  # 1-based physical line number, for messages
    doc: Document | None
    error: DataError | None


def read_corpus(source: str | os.PathLike, *, stop: int | None = None) -> Iterator[CorpusLine]:
    """Every non-blank line of a corpus up to ordinal ``stop`` (exclusive), as a document or an error.

    Readers that may skip bad lines (``encode --skip-invalid``) use this; a duplicate id is an error on its
    second occurrence, and an invalid line never enters the set of seen ids, so every reader of the same file
    (every shard) agrees on which lines are invalid.
    """
    path = corpus_file(source)
    seen: set[str] = set()
    ordinal = 0
    for number, raw in _raw_lines(path):
        if stop is not None and ordinal >= stop:
            return
        if _is_blank(raw):
            continue
        try:
            doc = _document(path, number, _parse_json(path, number, _decode(path, number, raw).rstrip("\r\n")))
            if doc.id in seen:
                raise DataError(path, number, f"duplicate document id {doc.id!r}",
                                "document ids must be unique: remove or rename the second one")
        except DataError as exc:
            yield CorpusLine(ordinal, number, None, exc)
        else:
            seen.add(doc.id)
            yield CorpusLine(ordinal, number, doc, None)
        ordinal += 1


def iter_corpus(source: str | os.PathLike) -> Iterator[Document]:
    """Stream the documents of a corpus (BEIR ``_id``/``title``/``text`` or pyserini ``id``/``contents``).

    The first bad line (not JSON, no id, duplicate id, bad UTF-8) raises DataError; an empty text is allowed.
    """
    for line in read_corpus(source):
        if line.error is not None:
            raise line.error
        yield line.doc


def _document(path: Path, number: int, obj: dict) -> Document:
    doc_id = obj.get("_id", obj.get("id", obj.get("docid")))
    if doc_id is None:
        raise DataError(path, number, "document has no id (expected '_id' or 'id')",
                        "give every line an '_id' (BEIR) or 'id' (pyserini JSONL)")
    doc_id = trec_id(doc_id, path, number, "document")
    if "contents" in obj and "text" not in obj:
        text = obj["contents"]
        title = ""
    else:
        text = obj.get("text")
        title = obj.get("title") or ""
    if text is None:
        raise DataError(path, number, f"document {doc_id!r} has no 'text' (BEIR) or 'contents' (pyserini)",
                        "add the field, even as an empty string")
    if not isinstance(text, str) or not isinstance(title, str):
        raise DataError(path, number, f"document {doc_id!r}: 'title' and 'text' must be strings")
    return Document(doc_id, title, text)


def count_corpus(source: str | os.PathLike) -> int:
    """Number of non-blank lines (documents, if all are valid), without parsing JSON: for progress and shards."""
    return sum(1 for _, raw in _raw_lines(corpus_file(source)) if not _is_blank(raw))


def require_documents(source: str | os.PathLike) -> int:
    """:func:`count_corpus`, or a DataError for a corpus with no documents (an empty index helps nobody)."""
    count = count_corpus(source)
    if count == 0:
        raise DataError(corpus_file(source), None, "the corpus has no documents: nothing to encode or index",
                        "pass a corpus with at least one document line")
    return count

