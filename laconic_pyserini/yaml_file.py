"""Reading the YAML files this toolkit takes as data (recipes, training configs), with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

from .text_file import read_config_text


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], *, missing: str, shape: str,
                      empty_ok: bool = False) -> dict:
    """The top-level mapping of the YAML file at ``path``.

    Raises ``error`` naming the file when it does not exist (``missing`` says where the shipped ones are), is too
    large or not UTF-8 (:mod:`laconic_pyserini.text_file`), is not valid YAML (with the parser's line and column),
    uses an alias (``*name``, refused: nested aliases expand without bound), or is not a mapping (``shape`` says
    what it should hold). An empty file is ``{}`` when ``empty_ok``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file ({missing})")
    text = read_config_text(path, error)
    try:
        raw = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping with {shape}")
    return raw


def _loader():
    """PyYAML's SafeLoader refusing aliases (``*name``): a few nested anchors expand a small file into gigabytes,
    and a recipe or a config gains nothing from them (write the value out)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} found: aliases are not "
                                                  "accepted here; write the value out", event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader
