"""The batch's summary files, rewritten atomically whenever an item changes: ``batch.json`` (the
whole state, also what ``--resume`` reads), ``batch.csv`` (one row per item, the run's scalar
metrics as ``metrics.*`` columns) and ``contact_sheet.png`` (a turntable frame per item, captioned
with its prompt and status).
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from text3d.core.io import atomic_path, write_json, write_text
from .state import BatchState, ItemState

CSV_COLUMNS = ["item", "status", "run_dir", "prompt", "overrides", "steps", "total_steps", "wall_time_s",
               "attempts", "error"]
TILE = 128
"""Side of one contact-sheet picture in pixels."""
CAPTION_LINES = 3


def write_summary(state: BatchState, contact_sheet: bool = True) -> None:
    """Rewrite ``batch.json`` and ``batch.csv`` (and ``contact_sheet.png`` when asked)."""
    data = state.to_json()
    write_json(state.batch_dir / "batch.json", data)
    write_text(state.batch_dir / "batch.csv", summary_csv(data["items"]))
    if contact_sheet:
        write_contact_sheet(state, state.batch_dir / "contact_sheet.png")


def _scalar_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    skip = {"steps", "wall_time_s", "prompt"}
    return {k: v for k, v in metrics.items() if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))}


def summary_csv(rows: List[Dict[str, Any]]) -> str:
    """One CSV row per item; overrides as JSON; every scalar metric of any item as a ``metrics.<key>`` column."""
    metric_keys: List[str] = []
    for row in rows:
        metric_keys += [k for k in _scalar_metrics(row.get("metrics") or {}) if k not in metric_keys]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS + [f"metrics.{k}" for k in metric_keys], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        line = {k: row.get(k) for k in CSV_COLUMNS}
        line["overrides"] = json.dumps(row.get("overrides") or {}, sort_keys=True)
        line.update({f"metrics.{k}": v for k, v in _scalar_metrics(row.get("metrics") or {}).items()})
        writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return out.getvalue()


def item_picture(run_dir: Path) -> Optional[np.ndarray]:
    """The first turntable frame of a run (uint8 [H, W, 3]), else its newest validation image, else None."""
    import imageio.v3 as iio

    candidates = [run_dir / "turntable.gif"] + sorted((run_dir / "validation").glob("step-*.png"), reverse=True)
    for path in candidates:
        if path.is_file():
            try:
                frame = iio.imread(path, index=0) if path.suffix == ".gif" else iio.imread(path)
            except (OSError, ValueError):
                continue
            frame = np.asarray(frame)
            if frame.ndim == 2:
                frame = np.stack([frame] * 3, axis=-1)
            return frame[..., :3].astype(np.uint8)
    return None


def _caption(item: ItemState) -> List[str]:
    status = item.status
    if item.status == "done" and isinstance(item.metrics.get("silhouette_iou"), (int, float)):
        status += f"  IoU {item.metrics['silhouette_iou']:.2f}"
    lines = textwrap.wrap(item.prompt or item.item, width=TILE // 6) or [item.item]
    return lines[:CAPTION_LINES - 1] + [status]


def write_contact_sheet(state: BatchState, path: Path) -> Path:
    """One tile per item: its picture (grey when there is none yet) above its prompt and status."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    cols = max(1, min(6, len(state.items)))
    rows = (len(state.items) + cols - 1) // cols
    line_h = 12
    tile_h = TILE + CAPTION_LINES * line_h + 6
    sheet = Image.new("RGB", (cols * TILE, rows * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, item in enumerate(state.items):
        x, y = (k % cols) * TILE, (k // cols) * tile_h
        picture = item_picture(state.batch_dir / item.item)
        tile = Image.fromarray(picture).resize((TILE, TILE)) if picture is not None else Image.new("RGB", (TILE, TILE), (200, 200, 200))
        sheet.paste(tile, (x, y))
        colour = (160, 0, 0) if item.status == "failed" else (0, 0, 0)
        for j, text in enumerate(_caption(item)):
            draw.text((x + 3, y + TILE + 2 + j * line_h), text, fill=colour, font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp)
    return path
