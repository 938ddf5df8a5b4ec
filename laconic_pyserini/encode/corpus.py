"""The encode loop: read a corpus, encode it in length-sorted batches, commit part files, resume after a kill.

The corpus is cut into parts of ``part_size`` documents. Inside a part, documents are taken in windows of
``window_batches * batch_size``, each window sorted by token length (longest first) so that batches carry
little padding, and written back in corpus order. Windows restart at every part boundary, so a rerun that
resumes at the first uncommitted part builds exactly the batches an uninterrupted run builds, and its output is
byte-identical.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..data import read_corpus
from ..quantize import quantize
from ..spec import current_spec_dict
from .manifest import MANIFEST_NAME, SHARDS_DIR, EncodeError, Manifest, load_manifest_file, write_json_atomic
from .shards import (all_shards_complete, manifest_path, merge_shards, parts_folder, resolve_shard, shard_range)
from .source import describe_corpus, document_text, resolve_docs_as_queries
from .writer import commit_part, remove_uncommitted, vector_line

logger = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 10_000
DEFAULT_WINDOW_BATCHES = 50
# Settings that change the bytes written; a rerun into the same folder must repeat them.
_CONTRACT_SETTINGS = ("part_size", "window_batches", "dtype", "fields", "docs_as_queries", "skip_invalid")


def encode_corpus(corpus: str | os.PathLike, embeddings_dir: str | os.PathLike, spec=None, *,
                  encoder=None, batch_size: int = 32, device: str = "cpu", dtype: str = "fp32",
                  shard_id: int | None = None, shard_num: int | None = None, skip_invalid: bool = False,
                  docs_as_queries: bool | None = None, fields: tuple[str, ...] = ("title", "text"),
                  part_size: int = DEFAULT_PART_SIZE, window_batches: int = DEFAULT_WINDOW_BATCHES,
                  progress: bool = True, merge: bool = True) -> Manifest:
    """Encode ``corpus`` into an Anserini JsonVectorCollection under ``embeddings_dir``; resume if begun.

    ``spec`` is an :class:`~laconic_pyserini.spec.EncoderSpec` or anything ``load_spec`` accepts; ``encoder`` an
    already loaded :class:`~laconic_pyserini.modeling.SparseEncoder` (its spec is used). ``docs_as_queries=None``
    decides from the dataset's name (BEIR Quora and CQADupStack documents take the query prefix; see
    :func:`~laconic_pyserini.encode.source.resolve_docs_as_queries`). Returns this run's
    manifest (this shard's, when sharded; the merged one when this shard finished last and ``merge``).
    """
    spec = _sparse_spec(spec, encoder)
    if batch_size < 1 or part_size < 1 or window_batches < 1:
        raise EncodeError("--batch-size, part size and window must be positive")
    if not fields or any(f not in ("title", "text") for f in fields):
        raise EncodeError(f"--fields {' '.join(fields)}: choose from title, text")
    shard_id, shard_num = resolve_shard(shard_id, shard_num)
    described = describe_corpus(corpus)
    docs_as_queries = resolve_docs_as_queries(corpus, docs_as_queries)
    start, end = shard_range(shard_id, shard_num, described["lines"])
    settings = {"batch_size": batch_size, "device": device, "dtype": dtype, "part_size": part_size,
                "window_batches": window_batches, "fields": list(fields), "docs_as_queries": bool(docs_as_queries),
                "skip_invalid": bool(skip_invalid)}
    root = Path(embeddings_dir)
    manifest = _open_output(root, spec, described, settings, shard_id, shard_num, start, end)
    if manifest.complete:
        logger.info("%s: already complete (%d documents); nothing to do", root, manifest.documents)
        return _maybe_merge(root, manifest, shard_num, merge)

    folder = parts_folder(shard_id, shard_num)
    _drop_uncommitted(root / folder, manifest)
    mpath = manifest_path(root, shard_id, shard_num)
    write_json_atomic(mpath, manifest.to_dict())

    if encoder is None:
        from ..modeling import load_sparse_encoder

        encoder = load_sparse_encoder(spec, device=device, dtype=dtype)
    resume = manifest.parts[-1].end if manifest.parts else start
    if resume > start:
        logger.info("resuming %s at corpus line %d of [%d, %d) after %d committed part(s)", root, resume, start, end,
                    len(manifest.parts))
    bar = _progress(progress, total=end - start, initial=resume - start, desc=f"encode {spec.name}")
    run = _PartBuilder(encoder, spec, fields, bool(docs_as_queries), batch_size, batch_size * window_batches, bar)
    try:
        invalid = _encode_parts(run, corpus, root, folder, manifest, mpath, resume, end, part_size=part_size,
                                skip_invalid=skip_invalid)
    finally:
        bar.close()
    _complete(manifest, mpath, invalid)
    return _maybe_merge(root, manifest, shard_num, merge)


def _drop_uncommitted(parts_dir: Path, manifest: Manifest) -> None:
    removed = remove_uncommitted(parts_dir, {Path(p.path).name for p in manifest.parts})
    if removed:
        logger.info("removed %d uncommitted file(s) of an interrupted run: %s", len(removed),
                    ", ".join(p.name for p in removed))


def _complete(manifest: Manifest, mpath: Path, invalid: list[dict]) -> None:
    """Mark the encoding complete; invalid lines after a full last part belong to no part and are counted here."""
    manifest.tail_invalid = invalid[:100]
    manifest.tail_invalid_lines = len(invalid)
    manifest.complete = True
    write_json_atomic(mpath, manifest.to_dict())
    counts = manifest.counts
    logger.info("%s: %d documents (%d empty, %d empty vectors, %d invalid lines skipped) in %d parts", manifest.root,
                counts["documents"], counts["empty_documents"], counts["empty_vectors"], counts["invalid_lines"],
                len(manifest.parts))


def _sparse_spec(spec, encoder):
    """The spec to encode with: the loaded encoder's, or ``spec`` (a spec or what ``load_spec`` takes); sparse only."""
    if encoder is not None:
        spec = encoder.spec
    elif spec is None:
        raise EncodeError("encode_corpus needs an encoder spec or a loaded encoder")
    elif not hasattr(spec, "to_dict"):
        from ..spec import load_spec

        spec = load_spec(str(spec))
    if spec.kind == "dense":
        raise EncodeError(f"encoder {spec.name!r} is dense; this writer makes sparse JsonVectorCollections")
    return spec


def _encode_parts(run: "_PartBuilder", corpus, root: Path, folder: str, manifest: Manifest, mpath: Path, resume: int,
                  end: int, *, part_size: int, skip_invalid: bool) -> list[dict]:
    """Encode corpus lines [resume, end) into parts, each committed (and the manifest rewritten) when full;
    returns the invalid lines after the last part, which belong to no part."""
    part_start = resume
    invalid: list[dict] = []
    for line in read_corpus(corpus, stop=end):
        if line.ordinal < resume:
            continue
        if line.error is not None:
            if not skip_invalid:
                raise line.error
            invalid.append({"line": line.number, "problem": str(line.error)})
            logger.warning("skipping invalid line: %s", line.error)
            run.bar.update(1)
            continue
        run.add(line.doc)
        if len(run.docs) == part_size:
            manifest.parts.append(run.commit(root, folder, len(manifest.parts), part_start, line.ordinal + 1,
                                             invalid))
            write_json_atomic(mpath, manifest.to_dict())
            part_start, invalid = line.ordinal + 1, []
    if run.docs:
        # The last part runs to the end of the shard, so invalid lines after its last document are its own.
        manifest.parts.append(run.commit(root, folder, len(manifest.parts), part_start, end, invalid))
        invalid = []
    return invalid


def _maybe_merge(root: Path, manifest: Manifest, shard_num: int, merge: bool) -> Manifest:
    if shard_num == 1 or not merge:
        return manifest
    if not all_shards_complete(root, shard_num):
        logger.info("%s: this shard is complete; merge runs when all %d shards are", root, shard_num)
        return manifest
    return merge_shards(root)


def _progress(enabled: bool, *, total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="doc", disable=not enabled, dynamic_ncols=True)


class _PartBuilder:
    """Collects the documents of one part and encodes them window by window."""

    def __init__(self, encoder, spec, fields, as_query: bool, batch_size: int, window: int, bar) -> None:
        self.encoder, self.spec, self.fields, self.as_query = encoder, spec, tuple(fields), as_query
        self.batch_size, self.window, self.bar = batch_size, window, bar
        self.docs: list = []

    def add(self, doc) -> None:
        self.docs.append(doc)

    def _encode(self, texts: list[str]) -> list[dict[str, int]]:
        impacts: list[dict[str, int] | None] = [None] * len(texts)
        for w0 in range(0, len(texts), self.window):
            window = list(range(w0, min(w0 + self.window, len(texts))))
            lengths = self.encoder.tokenize_lengths([texts[i] for i in window])
            # Longest first, ties in corpus order: deterministic, and a batch too large fails at once.
            order = sorted(window, key=lambda i: (-lengths[i - w0], i))
            for b0 in range(0, len(order), self.batch_size):
                batch = order[b0:b0 + self.batch_size]
                vectors = self.encoder.encode_documents([texts[i] for i in batch], as_query=self.as_query)
                for i, vector in zip(batch, vectors, strict=True):
                    impacts[i] = quantize(vector, self.spec.quant_scale)
                self.bar.update(len(batch))
        return impacts  # type: ignore[return-value]

    def commit(self, root: Path, folder: str, index: int, start: int, end: int, invalid: list[dict]):
        texts = [document_text(doc, self.fields) for doc in self.docs]
        impacts = self._encode(texts)
        lines = [vector_line(doc.id, text, vector) for doc, text, vector in zip(self.docs, texts, impacts)]
        part = commit_part(root, folder, index, lines, start=start, end=end,
                           empty_documents=sum(1 for d in self.docs if not d.title.strip() and not d.text.strip()),
                           empty_vectors=sum(1 for v in impacts if not v), invalid=invalid[:100],
                           invalid_lines=len(invalid), terms=sum(len(v) for v in impacts))
        logger.debug("committed %s (%d documents)", part.path, part.documents)
        self.docs = []
        return part


def _open_output(root: Path, spec, corpus: dict, settings: dict, shard_id: int, shard_num: int, start: int,
                 end: int) -> Manifest:
    """The manifest to continue: the existing one when it matches this run, a fresh one for a new folder."""
    mpath = manifest_path(root, shard_id, shard_num)
    shard = {"id": shard_id, "num": shard_num, "start": start, "end": end}
    if shard_num == 1 and (root / SHARDS_DIR).is_dir():
        raise EncodeError(f"{root}: holds a sharded encoding ({SHARDS_DIR}/); encode unsharded into another folder")
    if shard_num > 1 and (root / MANIFEST_NAME).is_file():
        top = load_manifest_file(root / MANIFEST_NAME, root)
        if top.shard.get("num") != shard_num:
            raise EncodeError(f"{root / MANIFEST_NAME}: this folder holds an encoding split {top.shard.get('num')} "
                              f"way(s), not {shard_num}; use another --embeddings folder")
    if not mpath.is_file():
        stray = root / parts_folder(shard_id, shard_num)
        if stray.is_dir() and any(p.name.startswith("part-") and not p.name.endswith(".tmp")
                                  for p in stray.iterdir() if p.is_file()):
            raise EncodeError(f"{stray}: part files without a manifest; this is not a resumable encode output "
                              "folder; pass an empty --embeddings folder")
        root.mkdir(parents=True, exist_ok=True)
        if shard_num > 1:
            (root / SHARDS_DIR).mkdir(exist_ok=True)
        return Manifest(root=root, spec=spec.to_dict(), corpus=corpus, shard=shard, settings=settings, parts=[],
                        complete=False, package_version=_version())
    manifest = load_manifest_file(mpath, root)
    if current_spec_dict(manifest.spec) != spec.to_dict():
        from ..spec import EncoderSpec, SpecError

        try:
            why = EncoderSpec.from_dict(manifest.spec).mismatch(spec) or "their fields differ"
        except SpecError:
            why = "the recorded spec is not readable"
        differing = sorted(k for k in set(manifest.spec) | set(spec.to_dict())
                           if manifest.spec.get(k) != spec.to_dict().get(k))
        raise EncodeError(f"{mpath}: this folder was encoded with encoder {manifest.spec.get('name')!r}, this run asks "
                          f"for {spec.name!r} ({why}; differing fields: {', '.join(differing)}); pass an empty "
                          "--embeddings folder or delete this one")
    if not manifest.parts:
        # Nothing was committed (e.g. the first run stopped at a bad line): start over with this run's settings.
        return Manifest(root=root, spec=manifest.spec, corpus=corpus, shard=shard, settings=settings, parts=[],
                        complete=False, package_version=_version())
    for key in ("path", "bytes", "lines"):
        if manifest.corpus.get(key) != corpus.get(key):
            raise EncodeError(f"{mpath}: this folder encodes {manifest.corpus.get('path')} "
                              f"({manifest.corpus.get('bytes')} bytes, {manifest.corpus.get('lines')} lines), this run "
                              f"reads {corpus['path']} ({corpus['bytes']} bytes, {corpus['lines']} lines); use "
                              "another --embeddings folder")
    if manifest.shard != shard:
        raise EncodeError(f"{mpath}: written as shard {manifest.shard}, this run is shard {shard}")
    for key in _CONTRACT_SETTINGS:
        if manifest.settings.get(key) != settings.get(key):
            raise EncodeError(f"{mpath}: written with {key}={manifest.settings.get(key)!r}, this run has "
                              f"{settings.get(key)!r}; rerun with the same options to resume, or use another folder")
    for key in ("batch_size", "device"):
        if manifest.settings.get(key) != settings.get(key):
            logger.warning("%s: resuming with %s=%r (was %r): the remaining parts may differ in the last float "
                           "digits from an uninterrupted run", mpath, key, settings[key], manifest.settings.get(key))
    return manifest


def _version() -> str:
    from .. import __version__

    return __version__
