"""The items of a batch, read from a PROMPTS file.

Three forms, picked by the file's extension:

- ``.txt`` (or anything else): one prompt per line; blank lines and lines starting with ``#`` are skipped.
- ``.jsonl``: one JSON value per line: a prompt string, or an object of config overrides
  (``{"prompt": "a red cube", "seed": 3, "guidance.guidance_scale": 50}``; nested objects work too).
- ``.yaml`` / ``.yml``: a list whose entries are prompt strings or mappings of overrides.

In an override set two keys are the batch's own: ``item`` names the item's folder (default: the
prompt as a slug) and ``config`` picks another preset for that item. Every other key is a config
override, validated per item later (a bad one fails that item only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from text3d.core.errors import ConfigError
from text3d.core.paths import safe_component

RESERVED_NAMES = ("batch.json", "batch.csv", "contact_sheet.png")
"""Files of the batch directory beside the item folders."""

ITEM_KEYS = ("item", "config")
"""Keys of an override set that belong to the batch, not to the run's config."""


@dataclass
class BatchItem:
    """One entry of the PROMPTS file.

    Attributes:
        name: the item's folder name inside the batch directory (safe, unique in the batch).
        line: 1-based line of the entry in the PROMPTS file.
        overrides: config overrides as given (dotted keys kept), e.g. ``{"prompt": "a red cube"}``.
        config: a preset for this item only (None: the batch's CONFIG).
    """

    name: str
    line: int
    overrides: Dict[str, Any] = field(default_factory=dict)
    config: Optional[str] = None

    @property
    def prompt(self) -> Optional[str]:
        value = self.overrides.get("prompt")
        return None if value is None else str(value)

    def nested_overrides(self) -> Dict[str, Any]:
        """The overrides as one nested mapping (``{"a.b": 1}`` -> ``{"a": {"b": 1}}``)."""
        out: Dict[str, Any] = {}
        for key, value in self.overrides.items():
            node = out
            *parents, leaf = str(key).split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"item {self.name!r} (line {self.line}): key {key!r} conflicts with "
                                      f"another override of {part!r}")
            node[leaf] = _merge(node[leaf], value) if isinstance(node.get(leaf), dict) else value
        return out


def _merge(a: Dict[str, Any], b: Any) -> Any:
    if not isinstance(b, dict):
        return b
    return {**a, **{k: _merge(a[k], v) if isinstance(a.get(k), dict) else v for k, v in b.items()}}


def read_items(path: str | Path) -> List[BatchItem]:
    """Parse a PROMPTS file into items with unique folder names.

    Raises:
        ConfigError: the file is missing or has no item, or an entry is malformed (names its line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompts file {str(path)!r} not found; give a .txt (one prompt per line), .jsonl or .yaml file")
    text = path.read_text(encoding="utf-8", errors="replace")
    reader = {".jsonl": _jsonl_entries, ".yaml": _yaml_entries, ".yml": _yaml_entries}.get(path.suffix.lower(), _text_entries)
    items = [_to_item(path, line, value) for line, value in reader(path, text)]
    if not items:
        raise ConfigError(f"prompts file {str(path)!r} has no prompt; write one prompt per line "
                          "(or one JSON object of overrides per line in a .jsonl file)")
    return _unique_names(items)


def _text_entries(path: Path, text: str) -> Iterator[Tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _jsonl_entries(path: Path, text: str) -> Iterator[Tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno}); "
                              "each line must be a JSON object of overrides or a JSON string") from None


def _yaml_entries(path: Path, text: str) -> Iterator[Tuple[int, Any]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: expected a YAML list of prompts or override "
                              "mappings (lines starting with '- ')")
        entries = [(child.start_mark.line + 1, loader.construct_object(child, deep=True)) for child in node.value]
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_error(path, e)) from None
    finally:
        loader.dispose()
    yield from entries


def _yaml_error(path: Path, e: yaml.MarkedYAMLError) -> str:
    """``FILE:LINE: not valid YAML: ...``, with the line where the unfinished construct began."""
    mark = e.problem_mark or e.context_mark
    where = f":{mark.line + 1}" if mark is not None else ""
    context = ""
    if e.context and e.context_mark is not None and e.context_mark is not mark:
        context = f"{e.context} on line {e.context_mark.line + 1}: "
    return f"{path}{where}: not valid YAML ({context}{e.problem or e.context})"


def _to_item(path: Path, line: int, value: Any) -> BatchItem:
    where = f"{path}:{line}"
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: empty prompt")
        return BatchItem(name="", line=line, overrides={"prompt": value.strip()})
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected a prompt string or a mapping of overrides, got {value!r}")
    overrides = {str(k): v for k, v in value.items() if k not in ITEM_KEYS}
    if "resume" in overrides:
        raise ConfigError(f"{where}: 'resume' is not an item override; continue a batch with --resume BATCH_DIR")
    for key in ITEM_KEYS:
        if key in value and not (isinstance(value[key], str) and value[key].strip()):
            raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value[key]!r}")
    name = safe_component(value["item"], fallback="") if "item" in value else ""
    return BatchItem(name=name, line=line, overrides=overrides, config=value.get("config"))


def _unique_names(items: List[BatchItem]) -> List[BatchItem]:
    """Name unnamed items after their prompt (``item-<line>`` without one); ``-2``, ``-3``... for repeats.
    Names of the batch's own files are never used for a folder."""
    used = set(RESERVED_NAMES)
    for item in items:
        base = item.name or (safe_component(item.prompt, fallback="") if item.prompt else "") or f"item-{item.line}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        item.name = name
    return items
