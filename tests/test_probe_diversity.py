"""benchmarks/probe_shared_attention.py: the colour-diversity figure of independent samples."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import probe_shared_attention as probe  # noqa: E402


def _set(base, stripe):
    return {"base": torch.tensor(base), "stripe": torch.tensor(stripe), "shape": torch.zeros(len(base))}


def test_the_commonest_colour_pair_share_is_counted_per_prompt_over_every_seed():
    sets = [_set([0, 0, 1, 2], [-1, -1, -1, -1]), _set([0, 3, 3, 3], [-1, -1, -1, 5]),  # prompt a: (0,-1) x3, (3,-1) x2
            _set([4, 4, 4, 4], [1, 1, 1, 1]), _set([4, 4, 4, 4], [1, 1, 1, 2])]  # prompt b: (4,1) x7 of 8
    share = probe.colour_diversity(sets, ["a", "b"])
    assert share == {"a": 3 / 8, "b": 7 / 8}


def test_held_out_seeds_and_the_logit_shift_reach_the_processors():
    args = probe.build_parser().parse_args(["--seeds", "5", "--first-seed", "5", "--shift", "1.5"])
    assert probe.seed_list(args) == [5, 6, 7, 8, 9]
    assert probe.PROCESSORS["shared-shift"](4, args.shift).shared_score_shift == 1.5
    assert probe.PROCESSORS["shared"](4, args.shift).shared_score_shift == 0.0
