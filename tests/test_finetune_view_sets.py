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
