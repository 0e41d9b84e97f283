"""The items of a batch, read from a PROMPTS file.

Five forms, picked by the file's extension:

- ``.txt`` (or anything else): one prompt per line; blank lines and lines starting with ``#`` are skipped.
- ``.csv``: a header row of override keys (``prompt,seed,guidance.guidance_scale``), then one item per
  row; an empty cell leaves that key to the config.
- ``.jsonl``: one JSON value per line: a prompt string, or an object of config overrides
  (``{"prompt": "a red cube", "seed": 3, "guidance.guidance_scale": 50}``; nested objects work too).
- ``.json``: one JSON array of such values.
- ``.yaml`` / ``.yml``: a list whose entries are prompt strings or mappings of overrides.

The file must be UTF-8 text; anything else (a binary file, another encoding) is refused.

In an override set two keys are the batch's own: ``item`` names the item's folder (default: the
prompt as a slug) and ``config`` picks another preset for that item. Every other key is a config
override, validated per item later (a bad one fails that item only).
"""

from __future__ import annotations

import csv
import io
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

NOT_ITEM_KEYS = {
    "resume": "continue a batch with --resume BATCH_DIR",
    "output_dir": "an item's run folder is BATCH_DIR/<item>; name it with 'item', or set output_dir for the "
                  "whole batch on the command line",
    "name": "an item's run folder is BATCH_DIR/<item>; name it with 'item'",
    "tag": "an item's run folder is BATCH_DIR/<item>; name it with 'item'",
}
"""Config keys an item may not set (the batch decides them), with what to do instead."""

FORMATS = ".txt (one prompt per line), .csv (a header of override keys), .json, .jsonl or .yaml"


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
    text = _read_text(path)
    reader = {".jsonl": _jsonl_entries, ".json": _json_entries, ".csv": _csv_entries, ".yaml": _yaml_entries,
              ".yml": _yaml_entries}.get(path.suffix.lower(), _text_entries)
    items = [_to_item(path, line, value) for line, value in reader(path, text)]
    if not items:
        raise ConfigError(f"prompts file {str(path)!r} has no prompt; write one prompt per line "
                          "(or one JSON object of overrides per line in a .jsonl file)")
    return _unique_names(items)


def _read_text(path: Path) -> str:
    """The file's text; a folder, a missing file or anything not UTF-8 text is one clear error."""
    if path.is_dir():
        raise ConfigError(f"prompts file {str(path)!r} is a folder; give a {FORMATS} file")
    if not path.is_file():
        raise ConfigError(f"prompts file {str(path)!r} not found; give a {FORMATS} file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompts file {str(path)!r} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                          f"{e.start}); give a {FORMATS} file saved as UTF-8") from None
    if "\0" in text:
        raise ConfigError(f"prompts file {str(path)!r} is a binary file (it holds NUL bytes); give a {FORMATS} file")
    return text


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


def _json_entries(path: Path, text: str) -> Iterator[Tuple[int, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}:1: expected a JSON array of prompts or override objects, got a "
                          f"{type(data).__name__}")
    for value in data:
        yield 1, value


def _csv_entries(path: Path, text: str) -> Iterator[Tuple[int, Any]]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header or not all(key.strip() for key in header):
        raise ConfigError(f"{path}:1: the first row must name the override of each column (e.g. prompt,seed)")
    keys = [key.strip() for key in header]
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(keys):
            raise ConfigError(f"{path}:{number}: {len(row)} cells for the {len(keys)} columns {', '.join(keys)}")
        yield number, {key: cell.strip() for key, cell in zip(keys, row) if cell.strip()}


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
    for key, fix in NOT_ITEM_KEYS.items():
        if key in overrides:
            raise ConfigError(f"{where}: {key!r} is not an item override ({fix})")
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
