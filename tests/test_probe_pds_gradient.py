"""benchmarks/probe_pds_gradient.py: the per-timestep figures of a guidance's gradient, against
gradients whose scale and direction are known in closed form."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import probe_pds_gradient as probe  # noqa: E402


def test_the_colour_direction_runs_from_the_source_palette_colour_to_the_targets():
    from text3d.prior.shapes import COLOURS

    d = probe.colour_direction("a red cube", "a blue cube")
    expected = torch.tensor(COLOURS["blue"]) - torch.tensor(COLOURS["red"])
    assert torch.allclose(d, expected / expected.norm())
    with pytest.raises(SystemExit):
        probe.colour_direction("a red cube", "a teapot")


def test_a_flat_shift_towards_the_target_is_all_coarse_and_fully_towards_it():
    d = torch.tensor([1.0, -1.0, 0.0]) / 2 ** 0.5
    grad = -d.view(1, 3, 1, 1).expand(1, 3, 16, 16) * 0.5   # descent (-grad) moves every pixel along d
    rows = []
    probe.record({"grad": grad, "t": torch.tensor([900])}, d, rows)
    # RMS over the 3 x 16 x 16 entries is 0.5 * |d| / sqrt(3); the object-mean projection is 0.5
    assert rows[0]["coarse_share"] == pytest.approx(1.0, rel=1e-5)
    assert rows[0]["toward"] == pytest.approx(3 ** 0.5, rel=1e-5)


def test_a_pixel_checkerboard_has_no_coarse_energy_and_no_direction():
    d = torch.tensor([0.0, 0.0, 1.0])
    board = (torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2 * 2.0 - 1.0
    grad = board.expand(2, 3, 16, 16).clone()
    rows = []
    probe.record({"grad": grad, "t": torch.tensor([10, 150])}, d, rows)
    assert [r["coarse_share"] for r in rows] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert [r["toward"] for r in rows] == pytest.approx([0.0, 0.0], abs=1e-12)
    table = probe.bins(rows + [dict(t=950, energy=2 * rows[0]["energy"], coarse_share=1.0, toward=1.0)])
    assert [b["t"] for b in table] == ["0-100", "100-200", "800-1000"]
    assert [b["energy_share"] for b in table] == pytest.approx([0.25, 0.25, 0.5])
