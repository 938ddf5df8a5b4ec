"""Splitting one corpus between N encoding processes, and checking that their outputs cover it exactly once.

Shard ``k`` of ``N`` encodes the non-blank corpus lines ``[k*L//N, (k+1)*L//N)`` (``L`` lines in all), so the
shards concatenated in order are the corpus in order. Each writes its parts under ``vectors/shard-KK-of-NN/`` and
its own manifest ``shards/shard-KK-of-NN.json``; :func:`merge_shards` checks them against each other and against
the corpus and writes the combined ``manifest.json``. The last shard to finish merges by itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..data import count_corpus, read_corpus
from .manifest import (CONTRACT_SETTINGS, MANIFEST_NAME, SHARDS_DIR, VECTORS_DIR, EncodeError, Manifest,
                       check_same_weights, load_manifest_file, read_manifest, verify_parts, write_json_atomic)

logger = logging.getLogger(__name__)

_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


def resolve_shard(shard_id: int | None, shard_num: int | None) -> tuple[int, int]:
    """``(id, num)`` from the flags, else from torchrun's ``RANK``/``WORLD_SIZE``, else ``(0, 1)``."""
    if shard_id is None and shard_num is None:
        world = os.environ.get("WORLD_SIZE")
        if world is not None and int(world) > 1:
            return int(os.environ.get("RANK", "0")), int(world)
        return 0, 1
    if shard_id is None or shard_num is None:
        raise EncodeError("--shard-id and --shard-num go together: pass both, or neither")
    if shard_num < 1 or not 0 <= shard_id < shard_num:
        raise EncodeError(f"--shard-id {shard_id} --shard-num {shard_num}: need 0 <= shard-id < shard-num")
    return shard_id, shard_num


def shard_range(shard_id: int, shard_num: int, lines: int) -> tuple[int, int]:
    return shard_id * lines // shard_num, (shard_id + 1) * lines // shard_num


def shard_name(shard_id: int, shard_num: int) -> str:
    return f"shard-{shard_id:02d}-of-{shard_num:02d}"


def parts_folder(shard_id: int, shard_num: int) -> str:
    """Where shard ``shard_id`` writes its parts, relative to the embeddings folder."""
    return VECTORS_DIR if shard_num == 1 else f"{VECTORS_DIR}/{shard_name(shard_id, shard_num)}"


def manifest_path(root: Path, shard_id: int, shard_num: int) -> Path:
    """The manifest a shard keeps while it runs (the folder's own manifest.json when unsharded)."""
    return root / MANIFEST_NAME if shard_num == 1 else root / SHARDS_DIR / f"{shard_name(shard_id, shard_num)}.json"


def _shard_manifests(root: Path) -> dict[int, tuple[int, Path]]:
    found: dict[int, tuple[int, Path]] = {}
    folder = root / SHARDS_DIR
    if not folder.is_dir():
        return found
    nums = set()
    for path in sorted(folder.iterdir()):
        match = _SHARD_FILE.match(path.name)
        if match:
            nums.add(int(match.group(2)))
            found[int(match.group(1))] = (int(match.group(2)), path)
    if len(nums) > 1:
        raise EncodeError(f"{folder}: shard manifests of different splits ({', '.join(f'of {n}' for n in sorted(nums))}) "
                          "are mixed in one folder; encode each split into its own --embeddings folder")
    return found


def all_shards_complete(root: Path, shard_num: int) -> bool:
    found = _shard_manifests(root)
    if sorted(found) != list(range(shard_num)):
        return False
    return all(load_manifest_file(path, root).complete for _, path in found.values())


def merge_shards(embeddings_dir: str | os.PathLike, corpus: str | os.PathLike | None = None) -> Manifest:
    """Check that the shards of a folder cover the corpus exactly once and write the combined manifest.

    ``corpus`` defaults to the file the shards recorded. Raises :class:`EncodeError` naming the missing,
    incomplete, mismatched or overlapping shard.
    """
    root = Path(embeddings_dir)
    found = _shard_manifests(root)
    if not found:
        raise EncodeError(f"{root / SHARDS_DIR}: no shard manifests (shard-KK-of-NN.json); nothing to merge")
    shard_num = next(iter(found.values()))[0]
    missing = [k for k in range(shard_num) if k not in found]
    if missing:
        raise EncodeError(f"{root}: shard(s) {', '.join(map(str, missing))} of {shard_num} missing; run the encode "
                          f"command with --shard-id {missing[0]} --shard-num {shard_num}")
    shards = [load_manifest_file(found[k][1], root) for k in range(shard_num)]
    first = shards[0]
    expected_start = 0
    for k, shard in enumerate(shards):
        where = found[k][1]
        if not shard.complete:
            raise EncodeError(f"{where}: shard {k} of {shard_num} is incomplete; rerun it with the same command")
        if shard.shard.get("id") != k or shard.shard.get("num") != shard_num:
            raise EncodeError(f"{where}: says it is shard {shard.shard.get('id')} of {shard.shard.get('num')}, "
                              f"but its name says {k} of {shard_num}")
        if shard.spec != first.spec:
            raise EncodeError(f"{where}: encoded with a different encoder spec than shard 0; re-encode it")
        check_same_weights(shard, first.encoder_fingerprint, where)
        if shard.corpus != first.corpus:
            raise EncodeError(f"{where}: encoded from {shard.corpus.get('path')} ({shard.corpus.get('bytes')} bytes), "
                              f"shard 0 from {first.corpus.get('path')} ({first.corpus.get('bytes')} bytes)")
        for key in CONTRACT_SETTINGS:
            if shard.setting(key) != first.setting(key):
                raise EncodeError(f"{where}: setting {key}={shard.setting(key)!r}, shard 0 has "
                                  f"{first.setting(key)!r}; shards must be encoded alike")
        if shard.shard.get("start") != expected_start:
            raise EncodeError(f"{where}: shard {k} covers corpus lines from {shard.shard.get('start')}, expected "
                              f"{expected_start}: the shards overlap or leave a gap")
        expected_start = shard.shard["end"]
        verify_parts(shard)
    lines = first.corpus.get("lines")
    if expected_start != lines:
        raise EncodeError(f"{root}: the shards end at corpus line {expected_start}, the corpus has {lines}")
    merged = Manifest(root=root, spec=first.spec, corpus=first.corpus,
                      shard={"id": None, "num": shard_num, "start": 0, "end": lines},
                      settings=first.settings, parts=[p for s in shards for p in s.parts], complete=False,
                      encoder_fingerprint=first.encoder_fingerprint,
                      package_version=first.package_version,
                      tail_invalid=[i for s in shards for i in s.tail_invalid],
                      kernels=[{"shard": s.shard.get("id"), **k} for s in shards for k in s.kernels],
                      tail_invalid_lines=sum(s.tail_invalid_lines for s in shards),
                      shards=[{"id": k, "manifest": f"{SHARDS_DIR}/{found[k][1].name}", **s.counts}
                              for k, s in enumerate(shards)])
    check_coverage(merged, corpus if corpus is not None else first.corpus["path"])
    merged.complete = True
    write_json_atomic(root / MANIFEST_NAME, merged.to_dict())
    logger.info("merged %d shards of %s: %d documents", shard_num, root, merged.documents)
    return merged


def check_coverage(manifest: Manifest, corpus: str | os.PathLike) -> None:
    """Every valid corpus document appears exactly once in the parts, and nothing else does."""
    where: dict[str, str] = {}
    for part in manifest.parts:
        for doc_id in _part_ids(manifest.root / part.path):
            if doc_id in where:
                raise EncodeError(f"document {doc_id!r} is written twice: in {where[doc_id]} and {part.path} "
                                  "(overlapping shards); re-encode into an empty folder")
            where[doc_id] = part.path
    if count_corpus(corpus) != manifest.corpus.get("lines"):
        raise EncodeError(f"{corpus}: has {count_corpus(corpus)} lines, the encoding recorded "
                          f"{manifest.corpus.get('lines')}; the corpus changed since it was encoded")
    expected = [line.doc.id for line in read_corpus(corpus) if line.doc is not None]
    missing = [doc_id for doc_id in expected if doc_id not in where]
    if missing:
        raise EncodeError(f"{len(missing)} corpus documents are in no part (first: {missing[:3]}); a shard or part "
                          "is missing")
    if len(expected) != len(where):
        extra = sorted(set(where) - set(expected))
        raise EncodeError(f"{len(extra)} documents in the parts are not in {corpus} (first: {extra[:3]})")


def _part_ids(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for raw in f:
            yield json.loads(raw)["id"]


def verify_collection(embeddings_dir: str | os.PathLike, corpus: str | os.PathLike | None = None) -> Manifest:
    """Check a finished folder (sharded and merged, or not): part checksums, and the corpus covered exactly once."""
    manifest = read_manifest(embeddings_dir)
    verify_parts(manifest)
    check_coverage(manifest, corpus if corpus is not None else manifest.corpus["path"])
    return manifest
