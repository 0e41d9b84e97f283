"""Multi-view then reconstruct: a run fitted to the views and cameras a multiview folder holds."""

import json
from pathlib import Path

import pytest
import torch

from text3d.scene.cameras import turntable
from text3d.cli import main
from text3d.multiview.pipeline import load_multiview_config, write_outputs
from text3d.run.targets import ViewTargets
from text3d.run import open_run
from text3d.prior.shapes import render_shapes

REPO = Path(__file__).resolve().parents[1]
FROM_VIEWS = REPO / "configs" / "quickstart-from-views.yaml"
FAST = ["renderer.num_samples_per_ray=24", "trainer.val_every=0", "trainer.turntable_frames=0",
        "trainer.checkpoint_every=0", "trainer.log_every=0", "export.enabled=false", "cameras.batch_size=2"]


@pytest.fixture(scope="module")
def analytic_views(tmp_path_factory):
    """A multiview folder holding exact renders of a red cube at 6 cameras (as `text3d multiview` writes it)."""
    cfg = load_multiview_config(REPO / "configs" / "multiview-quickstart.yaml", ["prompt=a red cube", "views=6"])
    cams = turntable(6, 15.0, 3.0, 32.0, 32, 32)
    rgb, _ = render_shapes(["cube"] * 6, ["red"] * 6, cams, supersample=4)
    out = tmp_path_factory.mktemp("views") / "set"
    write_outputs(out, cfg, rgb.permute(0, 3, 1, 2), cams, ["a red cube"] * 6, {})
    return out, rgb


def test_targets_round_trip(analytic_views):
    folder, rgb = analytic_views
    targets = ViewTargets.load(folder)
    assert targets.images.shape == (6, 32, 32, 3)
    torch.testing.assert_close(targets.images, rgb, atol=0.5 / 255 + 1e-6, rtol=0)
    torch.testing.assert_close(targets.cameras.c2w, turntable(6, 15.0, 3.0, 32.0, 32, 32).c2w, atol=1e-5, rtol=0)


def test_reconstruction_fits_the_views(analytic_views, tmp_path):
    folder, _ = analytic_views
    run = open_run(FROM_VIEWS, [f"targets={folder}", "steps=40", f"output_dir={tmp_path}", *FAST])
    first = run.train_step()["image"]
    run.step = 1
    run.fit()
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert set(metrics["final_losses"]) == {"image", "loss"}  # lambda_sds 0: no guidance term
    assert metrics["final_losses"]["image"] < 0.5 * first


def test_targets_that_are_not_a_multiview_folder(tmp_path, capsys):
    assert main(["run", str(FROM_VIEWS), f"targets={tmp_path}", f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: targets:") and "multiview.json" in err[0]
    assert not (tmp_path / "out").exists()


GAUSSIANS = REPO / "configs" / "quickstart-gaussians.yaml"


def test_gaussians_fit_the_views(analytic_views, tmp_path):
    """Gaussian geometry takes targets too: pure reconstruction (no SDS term) halves the image loss."""
    folder, _ = analytic_views
    run = open_run(GAUSSIANS, [f"targets={folder}", "steps=30", f"output_dir={tmp_path}", "loss.lambda_sds=0",
                               "loss.lambda_image=1", "geometry.num_points=500", *FAST[1:]])
    first = run.train_step()["image"]
    run.step = 1
    run.fit()
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert set(metrics["final_losses"]) == {"image", "loss"}
    assert metrics["final_losses"]["image"] < 0.5 * first


@pytest.mark.parametrize("config", [FROM_VIEWS, GAUSSIANS], ids=["nerf", "gaussians"])
def test_targets_together_with_sds(analytic_views, tmp_path, config):
    """MVDream's recipe: SDS and the image loss in one objective; both terms are logged and the image term falls."""
    folder, _ = analytic_views
    extra = ["geometry.num_points=500"] if config == GAUSSIANS else []
    run = open_run(config, [f"targets={folder}", "steps=30", f"output_dir={tmp_path}", "loss.lambda_sds=0.01",
                            "loss.lambda_image=1", *extra, *(FAST if config == FROM_VIEWS else FAST[1:])])
    first = run.train_step()
    assert {"sds", "image"} <= set(first)
    run.step = 1
    run.fit()
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert {"sds", "image"} <= set(metrics["final_losses"])
    assert metrics["final_losses"]["image"] < 0.7 * first["image"]  # SDS pulls too: less than alone
