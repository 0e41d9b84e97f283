"""benchmarks/finetune_view_sets.py: sets are views of one object, and the fine-tuned prior is a prior."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import finetune_view_sets as ft  # noqa: E402

from text3d.prior.latent_data import PatternDataConfig, PatternDataset  # noqa: E402


def test_a_set_is_one_object_in_one_prompt_from_different_cameras():
    data = PatternDataConfig(bank_views_per_shape=16, stripe_prob=0.5, partial_prompt_prob=0.5)
    ds = PatternDataset(data, 16, seed=0)
    batch = ft.view_sets(ds, sets=6, n=3, dropout=0.3, gen=torch.Generator().manual_seed(0))
    assert batch.images.shape == (18, 3, 16, 16)
    for g in range(6):
        s = slice(3 * g, 3 * g + 3)
        for ids in (batch.shape_ids, batch.colour_ids, batch.stripe_ids):
            assert len(set(ids[s].tolist())) == 1
        texts = {p.split(",")[0] for p in batch.prompts[s]}  # the view suffix may differ, the text does not
        assert len(texts) == 1
        assert len({tuple(c.tolist()) for c in batch.camera[s]}) > 1  # random bank views (two may coincide)
    # objects differ between sets
    assert len(set(zip(batch.shape_ids[::3].tolist(), batch.colour_ids[::3].tolist()))) > 1


def test_the_fine_tuned_folder_loads_as_a_latent_prior_and_differs_from_its_start(tmp_path):
    from text3d.prior.latent_model import load_latent_prior

    out = tmp_path / "prior"
    threads = str(torch.get_num_threads())  # main() sets it: keep this process's count
    assert ft.main(["--out", str(out), "--iterations", "2", "--batch-size", "8", "--views", "4",
                    "--set-share", "1.0", "--lr", "1e-3", "--threads", threads]) == 0
    tuned, start = load_latent_prior(out), load_latent_prior(ft.BUILTIN)
    assert "viewsets-shared4-2" in tuned.meta["version"]
    changed = [k for k, v in tuned.unet.state_dict().items() if not torch.equal(v, start.unet.state_dict()[k])]
    assert changed and any("attn1" in k for k in changed)
    assert all(torch.equal(v, start.vae.state_dict()[k]) for k, v in tuned.vae.state_dict().items())


def test_the_learning_rate_warms_up_then_decays_on_a_cosine_to_its_floor():
    import argparse

    const = argparse.Namespace(lr=1e-3, lr_min=None, iterations=200)
    cosine = argparse.Namespace(lr=1e-3, lr_min=1e-5, iterations=200)
    assert ft.learning_rate(const, 0) == 1e-3 / 50 and ft.learning_rate(const, 49) == 1e-3
    assert ft.learning_rate(const, 199) == 1e-3
    assert ft.learning_rate(cosine, 50) == 1e-3
    assert abs(ft.learning_rate(cosine, 50 + 149 // 2) - (1e-5 + 1e-3) / 2) < 1e-5  # half-way: the mean
    assert abs(ft.learning_rate(cosine, 199) - 1e-5) < 1e-12


def test_the_written_weights_are_the_moving_average_of_the_steps(tmp_path):
    """With --ema-decay the folder holds shadow = d2 * (d1 * start + (1 - d1) * w1) + (1 - d2) * w2, where
    w1, w2 are the weights after 1 and 2 steps of the same run without EMA, d_n = (1 + n) / (10 + n)."""
    from text3d.prior.latent_model import load_latent_prior

    threads = str(torch.get_num_threads())
    common = ["--batch-size", "8", "--views", "4", "--set-share", "1.0", "--lr", "1e-3", "--threads", threads]
    weights = {}
    for name, extra in (("w1", ["--iterations", "1"]), ("w2", ["--iterations", "2"]),
                        ("ema", ["--iterations", "2", "--ema-decay", "0.999"])):
        assert ft.main(["--out", str(tmp_path / name), *extra, *common]) == 0
        weights[name] = load_latent_prior(tmp_path / name).unet.state_dict()
    start = load_latent_prior(ft.BUILTIN).unet.state_dict()
    d1, d2 = 1 / 10, 2 / 11
    for k, v in weights["ema"].items():
        if not v.is_floating_point():
            continue
        want = d2 * (d1 * start[k] + (1 - d1) * weights["w1"][k]) + (1 - d2) * weights["w2"][k]
        assert torch.allclose(v, want, atol=1e-6), k
    assert any(not torch.equal(weights["ema"][k], weights["w2"][k]) for k in start)
