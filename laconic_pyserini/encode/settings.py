"""What to encode, as typed objects: the settings that make an encoding what it is, apart from those that only
change how fast it is made.

- :class:`EncodeSettings`: the contract settings. They change the bytes written, so a resumed run, every shard of
  one encoding and a merge must agree on them; ``encode_corpus`` records them in ``manifest.json``
  (:data:`~laconic_pyserini.encode.manifest.CONTRACT_SETTINGS`, with the resolved ``dtype``) and
  :meth:`EncodeSettings.from_manifest` reads them back.
- :class:`InferenceSettings`: batch size, device and the requested dtype. They change the speed (and, for
  ``dtype``, which kernels run; ``auto`` resumes what a folder was begun with).

The encode CLI, the index recipes (``index_recipes/*.yaml``) and callers of :func:`~laconic_pyserini.encode.
encode_corpus` build these once; no command line is parsed again to recover them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..modeling import QUANTIZE_SCHEMES
from ..quantize import WEIGHTS
from .manifest import UNRECORDED_SETTINGS, EncodeError, recorded_setting

DEFAULT_PART_SIZE = 10_000
DEFAULT_WINDOW_BATCHES = 50
DOCUMENT_FIELDS = ("title", "text")
DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EncodeSettings:
    """The contract settings of an encoding (the resolved ``dtype`` is recorded beside them)."""

    weights: str = "impact"              # impact: rint(w * quant_scale); float: the encoder's positive weights
    quantize: str = "none"               # none | int8 | int4 | q8_0 | q4_0 (decoders on CPU)
    fields: tuple[str, ...] = DOCUMENT_FIELDS
    docs_as_queries: bool | None = None  # None: decided from the dataset's name (Quora, CQADupStack)
    skip_invalid: bool = False
    part_size: int = DEFAULT_PART_SIZE
    window_batches: int = DEFAULT_WINDOW_BATCHES

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if self.weights not in WEIGHTS:
            raise EncodeError(f"--weights {self.weights}: choose {' or '.join(WEIGHTS)}")
        if self.quantize not in QUANTIZE_SCHEMES:
            raise EncodeError(f"--quantize {self.quantize}: choose one of {', '.join(QUANTIZE_SCHEMES)}")
        if not self.fields or any(f not in DOCUMENT_FIELDS for f in self.fields):
            raise EncodeError(f"--fields {' '.join(self.fields)}: choose from title, text")
        if self.part_size < 1 or self.window_batches < 1:
            raise EncodeError("part size and window must be positive")

    def recorded(self) -> dict:
        """The settings as ``manifest.json`` records them: ``fields`` as a list, ``quantize`` and ``weights`` only
        where they are not the default (folders begun before they existed still resume)."""
        values = {**asdict(self), "fields": list(self.fields), "docs_as_queries": bool(self.docs_as_queries)}
        return {key: value for key, value in values.items()
                if key not in UNRECORDED_SETTINGS or value != UNRECORDED_SETTINGS[key]}

    @classmethod
    def from_manifest(cls, settings: dict) -> "EncodeSettings":
        """The settings a manifest's ``settings`` mapping records (unrecorded ones take what their absence means)."""
        values = {f.name: recorded_setting(settings, f.name) for f in fields(cls)}
        return cls(**{name: value for name, value in values.items() if value is not None})


@dataclass(frozen=True)
class InferenceSettings:
    """How fast an encoding is made: these may change between the runs that resume one folder."""

    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise EncodeError("--batch-size must be positive")
        if self.dtype not in DTYPES:
            raise EncodeError(f"--dtype {self.dtype}: choose one of {', '.join(DTYPES)}")


def with_options(settings: EncodeSettings | None, inference: InferenceSettings | None,
                 options: dict) -> tuple[EncodeSettings, InferenceSettings]:
    """``settings`` and ``inference`` (defaults where None) with the fields ``options`` names replaced: the keyword
    form of ``encode_corpus(..., batch_size=8, weights="float")``. An unknown keyword is a TypeError."""
    contract = {f.name for f in fields(EncodeSettings)}
    speed = {f.name for f in fields(InferenceSettings)}
    unknown = sorted(set(options) - contract - speed)
    if unknown:
        raise TypeError(f"encode_corpus() got unexpected keyword argument(s) {', '.join(unknown)}")
    settings = replace(settings or EncodeSettings(), **{k: v for k, v in options.items() if k in contract})
    inference = replace(inference or InferenceSettings(), **{k: v for k, v in options.items() if k in speed})
    return settings, inference
