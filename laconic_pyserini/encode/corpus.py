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
from dataclasses import replace
from pathlib import Path

from ..data import read_corpus
from ..fingerprint import encoder_fingerprint
from ..quantize import weigh
from ..spec import current_spec_dict
from ..outputs import after_commit, check_not_inside_output, claim_folder, clean_temps, locked, write_json_atomic
from .manifest import (CONTRACT_SETTINGS, KIND, MANIFEST_NAME, SHARDS_DIR, EncodeError, Manifest, check_same_weights,
                       load_manifest_file, part_intact, recorded_setting)
from .settings import EncodeSettings, InferenceSettings, with_options
from .shards import (all_shards_complete, manifest_path, merge_shards, parts_folder, resolve_shard, shard_range)
from .source import describe_corpus, document_text, resolve_docs_as_queries
from .writer import commit_part, vector_line

logger = logging.getLogger(__name__)



def encode_corpus(corpus: str | os.PathLike, embeddings_dir: str | os.PathLike, spec=None, *,
                  settings: EncodeSettings | None = None, inference: InferenceSettings | None = None,
                  encoder=None, shard_id: int | None = None, shard_num: int | None = None,
                  progress: bool | None = None, merge: bool = True, **options) -> Manifest:
    """Encode ``corpus`` into an Anserini JsonVectorCollection under ``embeddings_dir``; resume if begun.

    ``spec`` is an :class:`~laconic_pyserini.spec.EncoderSpec` or anything ``load_spec`` accepts; ``encoder`` an
    already loaded :class:`~laconic_pyserini.modeling.SparseEncoder` (its spec is used). ``settings`` are the
    contract settings (:class:`~laconic_pyserini.encode.settings.EncodeSettings`: weights, quantize, fields,
    docs_as_queries, skip_invalid, part size, window), ``inference`` the batch size, device and requested dtype;
    each of their fields may also be given as a keyword (``batch_size=8, weights="float"``), which replaces that
    field. ``docs_as_queries=None`` decides from the dataset's name (BEIR Quora and CQADupStack documents take the
    query prefix; see :func:`~laconic_pyserini.encode.source.resolve_docs_as_queries`). ``dtype="auto"`` resumes
    in the dtype the folder was begun with, and otherwise takes what this CPU runs fast
    (:func:`laconic_pyserini.modeling.cpu.resolve_dtype`); the manifest records the resolved dtype and, per run,
    the kernels and CPU decision. ``quantize`` (``int8``/``int4``, decoders on CPU:
    :mod:`laconic_pyserini.modeling.quantized`) fixes the dtype to the one its kernels take. ``progress=None``
    draws a bar when the console is a terminal (:func:`laconic_pyserini.console.progress_enabled`). Returns this
    run's manifest (this shard's, when sharded; the merged one when this shard finished last and ``merge``).

    The folder must be new, empty, or an encoding of this toolkit (else :class:`~laconic_pyserini.outputs.OutputError`);
    one process writes it at a time (per shard). A rerun of a complete encoding re-checks every part's sha256 and
    re-encodes only the parts that are missing or damaged.
    """
    settings, inference = with_options(settings, inference, options)
    spec = _resolve_spec(spec, encoder)
    shard_id, shard_num = resolve_shard(shard_id, shard_num)
    described = describe_corpus(corpus)
    start, end = shard_range(shard_id, shard_num, described["lines"])
    root = Path(embeddings_dir)
    dtype, quantize = inference.dtype, settings.quantize
    if encoder is not None:
        quantize = encoder.kernels.get("quantize", "none")
    elif quantize != "none":
        from ..modeling.quantized import check_scheme

        dtype = check_scheme(quantize, spec.kind, device=inference.device, dtype=dtype)
    settings = replace(settings, quantize=quantize,
                       docs_as_queries=bool(resolve_docs_as_queries(corpus, settings.docs_as_queries)))
    dtype = _run_dtype(dtype, spec, inference.device, encoder, manifest_path(root, shard_id, shard_num))
    recorded = {"batch_size": inference.batch_size, "device": inference.device, "dtype": dtype,
                **settings.recorded()}
    check_not_inside_output(root, flag="--embeddings")
    claim_folder(root, KIND, flag="--embeddings", inputs=[described["path"]], ours=_holds_shards)
    mpath = manifest_path(root, shard_id, shard_num)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = encoder_fingerprint(spec)
    with locked(mpath):
        manifest = _open_output(root, spec, described, recorded, shard_id, shard_num, start, end, fingerprint)
        job = _Job(corpus, root, mpath, parts_folder(shard_id, shard_num), manifest, spec, encoder,
                   dict(recorded, start=start, end=end, progress=progress))
        removed = clean_temps(root / job.folder)
        if removed:
            logger.info("removed %d temporary file(s) of an interrupted run: %s", len(removed),
                        ", ".join(p.name for p in removed))
        if manifest.complete:
            job.repair()
        else:
            job.run()
    return _maybe_merge(root, manifest, shard_num, merge)


def _run_dtype(requested: str, spec, device: str, encoder, mpath: Path) -> str:
    """The dtype this run encodes in (a contract setting: a resumed folder must keep it)."""
    if encoder is not None:
        return encoder.kernels["dtype"]
    if requested == "auto" and mpath.is_file():
        recorded = load_manifest_file(mpath, mpath.parent).settings.get("dtype")
        if recorded in ("fp32", "bf16"):
            return recorded  # a rerun on another CPU still resumes what the first run began
    from ..modeling.cpu import resolve_dtype

    return resolve_dtype(requested, decoder=spec.kind == "decoder", device=device)


def _resolve_spec(spec, encoder):
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


def _holds_shards(root: Path) -> bool:
    """A sharded encoding has no top manifest until it is merged: its shard manifests say it is ours."""
    folder = root / SHARDS_DIR
    if not folder.is_dir():
        return False
    for path in folder.glob("shard-*.json"):
        try:
            load_manifest_file(path, root)
        except EncodeError:
            continue
        return True
    return False


class _Job:
    """One encode run over one folder (one shard): encode what is missing, or repair what is damaged."""

    def __init__(self, corpus, root: Path, mpath: Path, folder: str, manifest: Manifest, spec, encoder,
                 settings: dict) -> None:
        self.corpus, self.root, self.mpath, self.folder = corpus, root, mpath, folder
        self.manifest, self.spec, self.encoder, self.settings = manifest, spec, encoder, settings
        self.committed = 0  # parts this process committed (the test hook counts these)

    def _builder(self, *, total: int, initial: int, first_part: int) -> "_PartBuilder":
        if self.encoder is None:
            from ..modeling import load_sparse_encoder

            quantize = self.settings.get("quantize", "none")
            self.encoder = load_sparse_encoder(self.spec, device=self.settings["device"],
                                               dtype="auto" if quantize != "none" else self.settings["dtype"],
                                               quantize=quantize)
        # Per run: what this process runs (dtype, head kernel, CPU decision), from the first part it writes.
        self.manifest.kernels.append({"first_part": first_part, **self.encoder.kernels})
        self._save()
        s = self.settings
        bar = _progress(s["progress"], total=total, initial=initial, desc=f"encode {self.spec.name}")
        return _PartBuilder(self.encoder, self.spec, s["fields"], s["docs_as_queries"], s["batch_size"],
                            s["batch_size"] * s["window_batches"], bar, s.get("weights", "impact"))

    def _save(self) -> None:
        write_json_atomic(self.mpath, self.manifest.to_dict())

    def run(self) -> None:
        """Encode from the first uncommitted part to the end of the shard, committing part by part."""
        manifest, s = self.manifest, self.settings
        self._save()
        start, end = s["start"], s["end"]
        resume = manifest.parts[-1].end if manifest.parts else start
        if resume > start:
            logger.info("resuming %s at corpus line %d of [%d, %d) after %d committed part(s)", self.root, resume,
                        start, end, len(manifest.parts))
        run = self._builder(total=end - start, initial=resume - start, first_part=len(manifest.parts))
        part_start, invalid = resume, []
        try:
            for line in read_corpus(self.corpus, stop=end):
                if line.ordinal < resume or not _take(line, run, invalid, s["skip_invalid"]):
                    continue
                if len(run.docs) == s["part_size"]:
                    self._commit(run, len(manifest.parts), part_start, line.ordinal + 1, invalid)
                    part_start, invalid = line.ordinal + 1, []
            if run.docs:
                # The last part runs to the end of the shard, so invalid lines after its last document are its own.
                self._commit(run, len(manifest.parts), part_start, end, invalid)
                invalid = []
        finally:
            run.bar.close()
        # Invalid lines after a full last part belong to no part; they are counted here.
        manifest.tail_invalid = invalid[:100]
        manifest.tail_invalid_lines = len(invalid)
        manifest.complete = True
        self._save()
        counts = manifest.counts
        logger.info("%s: %d documents (%d empty, %d empty vectors, %d invalid lines skipped) in %d parts",
                    self.root, counts["documents"], counts["empty_documents"], counts["empty_vectors"],
                    counts["invalid_lines"], len(manifest.parts))

    def _commit(self, run: "_PartBuilder", index: int, start: int, end: int, invalid: list[dict]) -> None:
        part = run.commit(self.root, self.folder, index, start, end, invalid)
        if index < len(self.manifest.parts):
            self.manifest.parts[index] = part
        else:
            self.manifest.parts.append(part)
        self._save()
        self.committed += 1
        after_commit(self.committed)

    def repair(self) -> None:
        """Re-check a complete encoding's parts; re-encode each missing or damaged one from its corpus lines."""
        damaged = [i for i, part in enumerate(self.manifest.parts) if not part_intact(self.root, part)]
        if not damaged:
            logger.info("%s: already complete (%d documents), every part checked; nothing to do", self.root,
                        self.manifest.documents)
            return
        logger.warning("%s: %d damaged or missing part(s): %s; re-encoding only those", self.root, len(damaged),
                       ", ".join(self.manifest.parts[i].path for i in damaged))
        run = self._builder(total=sum(self.manifest.parts[i].end - self.manifest.parts[i].start for i in damaged),
                            initial=0, first_part=damaged[0])
        try:
            for index in damaged:
                old = self.manifest.parts[index]
                invalid: list[dict] = []
                for line in read_corpus(self.corpus, stop=old.end):
                    if line.ordinal >= old.start:
                        _take(line, run, invalid, self.settings["skip_invalid"])
                self._commit(run, index, old.start, old.end, invalid)
                if self.manifest.parts[index].sha256 != old.sha256:
                    logger.warning("%s: re-encoded with a different sha256 than first recorded (another device or "
                                   "batch size?); the manifest now lists the new one",
                                   self.manifest.parts[index].path)
        finally:
            run.bar.close()


def _take(line, run: "_PartBuilder", invalid: list[dict], skip_invalid: bool) -> bool:
    """Add a corpus line's document to the part; an invalid line is an error, or counted with --skip-invalid."""
    if line.error is None:
        run.add(line.doc)
        return True
    if not skip_invalid:
        raise line.error
    invalid.append({"line": line.number, "problem": str(line.error)})
    logger.warning("skipping invalid line: %s", line.error)
    run.bar.update(1)
    return False


def _maybe_merge(root: Path, manifest: Manifest, shard_num: int, merge: bool) -> Manifest:
    if shard_num == 1 or not merge:
        return manifest
    if not all_shards_complete(root, shard_num):
        logger.info("%s: this shard is complete; merge runs when all %d shards are", root, shard_num)
        return manifest
    return merge_shards(root)


def _progress(enabled: bool | None, *, total: int, initial: int, desc: str):
    from ..console import progress_bar

    return progress_bar(total=total, initial=initial, desc=desc, enabled=enabled)


class _PartBuilder:
    """Collects the documents of one part and encodes them window by window."""

    def __init__(self, encoder, spec, fields, as_query: bool, batch_size: int, window: int, bar,
                 weights: str = "impact") -> None:
        self.encoder, self.spec, self.fields, self.as_query = encoder, spec, tuple(fields), as_query
        self.batch_size, self.window, self.bar, self.weights = batch_size, window, bar, weights
        self.docs: list = []

    def add(self, doc) -> None:
        self.docs.append(doc)

    def _encode(self, texts: list[str]) -> list[dict[str, float]]:
        impacts: list[dict[str, float] | None] = [None] * len(texts)
        for w0 in range(0, len(texts), self.window):
            window = list(range(w0, min(w0 + self.window, len(texts))))
            lengths = self.encoder.tokenize_lengths([texts[i] for i in window])
            # Longest first, ties in corpus order: deterministic, and a batch too large fails at once.
            order = sorted(window, key=lambda i: (-lengths[i - w0], i))
            for b0 in range(0, len(order), self.batch_size):
                batch = order[b0:b0 + self.batch_size]
                vectors = self.encoder.encode_documents([texts[i] for i in batch], as_query=self.as_query)
                for i, vector in zip(batch, vectors, strict=True):
                    impacts[i] = weigh(vector, self.spec.quant_scale, self.weights)
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
                 end: int, fingerprint: dict | None = None) -> Manifest:
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
        if stray.is_dir() and any(p.name.startswith("part-") for p in stray.iterdir() if p.is_file()):
            raise EncodeError(f"{stray}: part files without a manifest; this is not a resumable encode output "
                              "folder; pass an empty --embeddings folder")
        root.mkdir(parents=True, exist_ok=True)
        if shard_num > 1:
            (root / SHARDS_DIR).mkdir(exist_ok=True)
        return Manifest(root=root, spec=spec.to_dict(), corpus=corpus, shard=shard, settings=settings, parts=[],
                        complete=False, package_version=_version(), encoder_fingerprint=fingerprint)
    manifest = load_manifest_file(mpath, root)
    if not manifest.parts:
        # Nothing was committed (e.g. the first run stopped at a bad line or a bad --max-length): start over with
        # this run's encoder and settings, whatever the first run asked for.
        return Manifest(root=root, spec=spec.to_dict(), corpus=corpus, shard=shard, settings=settings, parts=[],
                        complete=False, package_version=_version(), encoder_fingerprint=fingerprint)
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
    check_same_weights(manifest, fingerprint, mpath)
    for key in ("path", "bytes", "lines"):
        if manifest.corpus.get(key) != corpus.get(key):
            raise EncodeError(f"{mpath}: this folder encodes {manifest.corpus.get('path')} "
                              f"({manifest.corpus.get('bytes')} bytes, {manifest.corpus.get('lines')} lines), this run "
                              f"reads {corpus['path']} ({corpus['bytes']} bytes, {corpus['lines']} lines); use "
                              "another --embeddings folder")
    if manifest.shard != shard:
        raise EncodeError(f"{mpath}: written as shard {manifest.shard}, this run is shard {shard}")
    for key in CONTRACT_SETTINGS:
        written, asked = manifest.setting(key), recorded_setting(settings, key)
        if written != asked:
            raise EncodeError(f"{mpath}: written with {key}={written!r}, this run has {asked!r}; rerun with the same "
                              "options to resume, or use another folder")
    for key in ("batch_size", "device"):
        if manifest.settings.get(key) != settings.get(key):
            logger.warning("%s: resuming with %s=%r (was %r): the remaining parts may differ in the last float "
                           "digits from an uninterrupted run", mpath, key, settings[key], manifest.settings.get(key))
    return manifest


def _version() -> str:
    from .. import __version__

    return __version__
