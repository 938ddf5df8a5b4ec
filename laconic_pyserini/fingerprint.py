"""An encoder's identity is its weights: a fingerprint of the files a spec loads, recorded in every manifest.

Two encoders with the same spec name can hold different weights (a fine-tuned copy in a folder named like the
original, a model folder replaced in place), and their vectors cannot be scored against each other. Every output
an encoder writes records :func:`encoder_fingerprint` under :data:`FINGERPRINT_KEY`; every reader compares it with
:func:`check_encoder_identity` and refuses a mismatch.

The fingerprint is a sha256 over ``role/file: sha256`` lines, one per file the spec's loader reads: weights
(``*.safetensors``, the GGUF file), ``config.json`` / ``adapter_config.json`` and the tokenizer files, of the model
folder (role ``model``), a LoRA adapter's base (``base``) and a separate tokenizer (``tokenizer``). File names are
relative, so a copy under another path has the same fingerprint. A hub id with no local copy is identified by the
revision its Hugging Face cache resolves ``main`` to (``basis: "hub"``); fingerprints of different bases are not
comparable and are refused, as are manifests written before fingerprints existed, unless the user passes
``--unrecorded-encoder accept`` (then one warning).

File digests are cached in ``$XDG_CACHE_HOME/laconic-pyserini/file-digests.json``, keyed by the absolute path and
checked against its size and ``mtime_ns``, so a multi-GB model is hashed once, not on every search. (A file rewritten
in place with the same size and a restored mtime is not noticed; nothing in this toolkit does that.)
This module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .spec import EncoderSpec, SpecError, resolve_model_location

logger = logging.getLogger(__name__)

#: The manifest key that holds an encoder's fingerprint.
FINGERPRINT_KEY = "encoder_fingerprint"
CACHE_FORMAT = "laconic-pyserini/file-digests"
CACHE_ENTRIES_KEPT = 2000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "merges.txt", "special_tokens_map.json", "added_tokens.json", "spiece.model",
                   "sentencepiece.bpe.model")
CONFIG_FILES = ("config.json", "adapter_config.json")
_LARGE_FILE = 256 << 20
#: What to do with an output that records no (comparable) fingerprint: refuse (default) or accept with a warning.
UNRECORDED = ("refuse", "accept")
UNRECORDED_FLAG = "--unrecorded-encoder"


class FingerprintError(SpecError):
    """An output was written by an encoder whose weights or tokenizer differ from the one asked for."""


# -------------------------------------------------------------------------------------------- digest cache


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/laconic-pyserini/file-digests.json`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "laconic-pyserini" / "file-digests.json"


class DigestCache:
    """sha256 of files, remembered by (absolute path, size, mtime_ns). ``hits`` / ``misses`` count lookups."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else cache_path()
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, dict] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("format") == CACHE_FORMAT and isinstance(data.get("files"), dict):
                    self._entries = data["files"]
            except (OSError, ValueError, AttributeError):
                pass  # no cache yet, or a damaged one: it is rebuilt, never trusted
        return self._entries

    def digest(self, file: str | os.PathLike) -> str:
        """The file's sha256 hex digest, from the cache when its size and mtime are unchanged."""
        path = Path(file).resolve()
        stat = path.stat()
        entries = self._load()
        entry = entries.get(str(path))
        if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            self.hits += 1
            return entry["sha256"]
        self.misses += 1
        if stat.st_size > _LARGE_FILE:
            logger.info("fingerprinting %s (%.1f GB); cached for later runs", path, stat.st_size / 1e9)
        with open(path, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        entries.pop(str(path), None)  # re-insert at the end: the newest entries are the ones kept
        entries[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        self._dirty = True
        return sha

    def save(self) -> None:
        """Write the cache if anything was added; a cache that cannot be written only costs re-hashing."""
        if not self._dirty or self._entries is None:
            return
        kept = dict(list(self._entries.items())[-CACHE_ENTRIES_KEPT:])
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "files": kept}, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            logger.debug("cannot write the digest cache %s (%s); files will be hashed again", self.path, exc)


# -------------------------------------------------------------------------------------------- fingerprints


def _folder_files(folder: Path, *, weights: bool, gguf_file: str | None) -> list[Path]:
    """The files of a model folder its loader reads (weights only when ``weights``)."""
    names = list(TOKENIZER_FILES)
    if weights:
        names += CONFIG_FILES
    files = [folder / name for name in names if (folder / name).is_file()]
    if weights:
        if gguf_file:
            files.append(folder / gguf_file)
        else:
            files += sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.gguf"))
            files += _module_files(folder)
    return files


def _module_files(folder: Path) -> list[Path]:
    # sentence-transformers modules beyond the transformer (e.g. 2_Dense/) carry their own weights.
    modules = folder / "modules.json"
    try:
        listed = json.loads(modules.read_text(encoding="utf-8")) if modules.is_file() else []
    except ValueError:
        return []
    files = []
    for module in listed if isinstance(listed, list) else []:
        sub = folder / str(module.get("path", "")) if isinstance(module, dict) else folder
        if sub != folder and sub.is_dir():
            files += sorted(sub.glob("*.safetensors")) + [p for p in [sub / "config.json"] if p.is_file()]
    return files


def _hub_revision(hub_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves ``main`` of ``hub_id`` to, or None."""
    hub_cache = os.environ.get("HF_HUB_CACHE") or (
        Path(os.environ["HF_HOME"]) / "hub" if os.environ.get("HF_HOME") else
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub")
    ref = Path(hub_cache) / ("models--" + hub_id.replace("/", "--")) / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _locations(spec: EncoderSpec) -> list[tuple[str, str, bool]]:
    """(role, hub id or path, holds weights) of everything the spec's loader reads."""
    model = resolve_model_location(spec.model)
    roles = [("model", model, True)]
    if spec.base_model and (Path(model) / "adapter_config.json").is_file():
        roles.append(("base", resolve_model_location(spec.base_model), True))
    if spec.tokenizer:
        roles.append(("tokenizer", resolve_model_location(spec.tokenizer), False))
    return roles


def encoder_fingerprint(spec: EncoderSpec, *, cache: DigestCache | None = None) -> dict | None:
    """``{"sha256", "basis", "files", "locations"}`` of the spec's weights and tokenizer; None when a hub id is
    neither a local folder nor in the Hugging Face cache (nothing to identify it by)."""
    own_cache = cache is None
    cache = DigestCache() if own_cache else cache
    files: dict[str, str] = {}
    locations: dict[str, str] = {}
    basis = "files"
    for role, location, weights in _locations(spec):
        locations[role] = location
        folder = Path(location)
        if folder.is_dir():
            for path in _folder_files(folder, weights=weights, gguf_file=spec.gguf_file if role == "model" else None):
                files[f"{role}/{path.relative_to(folder).as_posix()}"] = cache.digest(path)
            continue
        revision = _hub_revision(location)
        if revision is None:
            return None
        basis = "hub"
        files[f"{role}@revision"] = revision
    if own_cache:
        cache.save()
    combined = hashlib.sha256("".join(f"{k}: {v}\n" for k, v in sorted(files.items())).encode("utf-8"))
    return {"sha256": combined.hexdigest(), "basis": basis, "files": files, "locations": locations}


def fingerprint_difference(recorded: dict, current: dict) -> str:
    """Which files differ between two fingerprints, for an error message."""
    a, b = recorded.get("files") or {}, current.get("files") or {}
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    parts = ([f"{', '.join(changed)} differ" if len(changed) > 1 else f"{changed[0]} differs"] if changed else []) + \
        ([f"only the recorded encoder has {', '.join(only_a)}"] if only_a else []) + \
        ([f"only this one has {', '.join(only_b)}"] if only_b else [])
    return "; ".join(parts) or "the fingerprints differ"


def check_unrecorded_choice(unrecorded: str) -> None:
    if unrecorded not in UNRECORDED:
        raise SpecError(f"{UNRECORDED_FLAG} {unrecorded}: choose {' or '.join(UNRECORDED)}")


def check_encoder_identity(recorded: dict | None, spec: EncoderSpec, *, where: str, fix: str,
                           cache: DigestCache | None = None, unrecorded: str = "refuse") -> None:
    """Refuse ``spec`` when its files differ from the fingerprint ``recorded`` in ``where``'s manifest.

    ``recorded`` None (a manifest older than fingerprints) and fingerprints that cannot be compared (a hub
    revision against local files, a hub id not available here) are refused too, unless ``unrecorded`` is
    ``accept`` (what the user chose with :data:`UNRECORDED_FLAG`): then a one-line warning, and they pass.
    """
    check_unrecorded_choice(unrecorded)
    current = None if recorded is None else encoder_fingerprint(spec, cache=cache)
    check_same_encoder(recorded, current, where=where, what=f"encoder {spec.name!r} ({spec.model})", fix=fix,
                       unrecorded=unrecorded)


def check_same_encoder(recorded: dict | None, current: dict | None, *, where: str, what: str, fix: str,
                       unrecorded: str = "refuse") -> None:
    """Refuse when fingerprint ``current`` (of ``what``) differs from ``recorded`` (in ``where``'s manifest), or
    when either is missing or they have different bases unless ``unrecorded`` is ``accept`` (one warning)."""
    check_unrecorded_choice(unrecorded)
    if recorded is None or current is None or current.get("basis") != recorded.get("basis"):
        problem = (f"{where} records no encoder fingerprint (written by an older version, or from a hub id with no "
                   f"local files)" if recorded is None else f"{what} has no fingerprint comparable with the one "
                   f"{where} records ({recorded.get('basis')} basis)")
        if unrecorded != "accept":
            raise FingerprintError(f"{problem}: {what} cannot be checked against it; rebuild it with local model "
                                   f"files to record one, or pass {UNRECORDED_FLAG} accept to use it unchecked")
        logger.warning("%s; %s is not checked (%s accept)", problem, what, UNRECORDED_FLAG)
        return
    if current.get("sha256") != recorded.get("sha256"):
        built = (recorded.get("locations") or {}).get("model", "?")
        raise FingerprintError(
            f"{where} was built with the encoder files of {built} (fingerprint {str(recorded.get('sha256'))[:12]}), "
            f"but {what} has other weights or tokenizer ({fingerprint_difference(recorded, current)}; fingerprint "
            f"{str(current.get('sha256'))[:12]}); {fix}")

