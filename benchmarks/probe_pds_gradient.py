"""Where in the timestep range an editing guidance's gradient points, and at what spatial scale.

Runs one ``text3d edit`` (any preset, source and target the analytic judge knows) and records every
guidance evaluation's gradient on the renders (pixel prior: RGB; latent prior: the latents are
decoded by nothing here, so use it on the pixel prior). Per timestep bin it prints:

- ``energy share``: the bin's share of the summed squared gradient over the whole edit (which
  timesteps drive Adam's second moment);
- ``coarse share``: the share of each gradient's energy left after averaging it over 8x8-pixel blocks
  (1: the gradient is one flat colour shift; ~1/64: pixel-scale noise);
- ``toward target``: the object-mean of ``-grad`` projected on the direction from the source's
  palette colour to the target's, over the gradient's RMS (positive: the bin pushes towards the target
  colour as a whole; negative: back towards the source).

Used to find why Gaussian colour edits with PDS came out as confetti (docs/editing.md):

    python benchmarks/probe_pds_gradient.py --preset configs/edit-quickstart-gaussians.yaml \\
        --source RUN_DIR --target "a purple cone" --set guidance.t_min=0.02 --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BINS = (0, 100, 200, 300, 400, 500, 600, 700, 800, 1000)


def colour_direction(source_prompt: str, target_prompt: str) -> torch.Tensor:
    """Unit RGB direction from the source prompt's palette colour to the target's."""
    from text3d.prior.shapes import COLOURS, parse_prompt

    parsed = [parse_prompt(p) for p in (source_prompt, target_prompt)]
    if None in parsed:
        raise SystemExit(f"error: the analytic judge does not know {source_prompt!r} or {target_prompt!r}")
    d = torch.tensor(COLOURS[parsed[1][1]]) - torch.tensor(COLOURS[parsed[0][1]])
    return d / d.norm()


def record(out: Dict[str, Any], direction: torch.Tensor, rows: List[Dict[str, float]], block: int = 8) -> None:
    """Append one row per image of a guidance output ``out`` (its ``grad`` ``[B, 3, h, w]`` and ``t``)."""
    g = out["grad"].detach().float().cpu()
    coarse = F.interpolate(F.avg_pool2d(g, block), scale_factor=block, mode="nearest")
    for b in range(g.shape[0]):
        energy = float(g[b].pow(2).sum())
        rms = float(g[b].pow(2).mean().sqrt())
        toward = float(-(g[b].mean(dim=(1, 2)) @ direction)) / max(rms, 1e-12)
        rows.append(dict(t=int(out["t"][b]), energy=energy,
                         coarse_share=float(coarse[b].pow(2).sum()) / max(energy, 1e-12), toward=toward))


class Recorded:
    """The guidance, with every evaluation's output also handed to ``sink``."""

    def __init__(self, guidance, sink):
        self._guidance, self._sink = guidance, sink

    def __getattr__(self, name):
        return getattr(self._guidance, name)

    def __call__(self, *args, **kwargs):
        out = self._guidance(*args, **kwargs)
        self._sink(out)
        return out


def bins(rows: List[Dict[str, float]]) -> List[Dict[str, Any]]:
    """Per timestep bin: count, energy share, mean coarse share, mean and spread of ``toward``."""
    total = sum(r["energy"] for r in rows) or 1.0
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        rs = [r for r in rows if lo <= r["t"] < hi]
        if not rs:
            continue
        tw = torch.tensor([r["toward"] for r in rs])
        out.append(dict(t=f"{lo}-{hi}", n=len(rs), energy_share=round(sum(r["energy"] for r in rs) / total, 4),
                        coarse_share=round(sum(r["coarse_share"] for r in rs) / len(rs), 3),
                        toward=round(float(tw.mean()), 3), toward_sd=round(float(tw.std()) if len(rs) > 1 else 0.0, 3)))
    return out


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, help="an edit preset (configs/edit-*.yaml)")
    p.add_argument("--source", required=True, help="a run folder (its prompt is the source prompt)")
    p.add_argument("--target", required=True, help="target prompt the analytic judge knows")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides")
    p.add_argument("--out", default="outputs/probe_pds_gradient", help="where the edit folder goes")
    p.add_argument("--json", default=None, help="write the bins (and every row) here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    from text3d.core.io import write_json
    from text3d.edit import open_edit

    run = open_edit(Path(args.preset), [f"source={args.source}", f"target_prompt={args.target}", f"output_dir={args.out}",
                                        "trainer.val_every=0", "trainer.checkpoint_every=0", "export.enabled=false",
                                        *args.set])
    direction = colour_direction(run.cfg.edit.source_prompt, args.target)
    rows: List[Dict[str, float]] = []
    run.guidance = Recorded(run.guidance, lambda out: record(out, direction, rows))
    run.fit()
    table = bins(rows)
    print(f"{'t':>9} {'n':>4} {'energy share':>13} {'coarse share':>13} {'toward target':>14}")
    for b in table:
        print(f"{b['t']:>9} {b['n']:>4} {b['energy_share']:>13.3f} {b['coarse_share']:>13.3f} "
              f"{b['toward']:>+8.3f} (sd {b['toward_sd']:.2f})")
    if args.json:
        write_json(Path(args.json), {"preset": args.preset, "source": args.source, "target": args.target,
                                     "set": args.set, "bins": table, "rows": rows})
    print(run.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
