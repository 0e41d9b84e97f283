"""CLIP directional similarity on a tiny random CLIP saved to a folder, against a direct computation."""

import pytest
import torch
import torch.nn.functional as F

from text3d.edit.clip_metric import CLIP_MEAN, CLIP_STD, ClipScorer
from text3d.core.errors import ModelNotFoundError


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from text3d.guidance.tiny import write_tiny_tokenizer_files

    folder = tmp_path_factory.mktemp("tiny-clip")
    write_tiny_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.eos_token_id),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        image_size=32, patch_size=8),
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_directional_similarity_matches_a_direct_computation(tiny_clip_dir):
    scorer = ClipScorer(str(tiny_clip_dir))
    g = torch.Generator().manual_seed(0)
    src, edit = torch.rand(3, 48, 48, 3, generator=g), torch.rand(3, 48, 48, 3, generator=g)
    value = scorer.directional_similarity(src, edit, "a red cube", "a blue cube")

    model, tok = scorer.model, scorer.tokenizer

    def image(x):
        x = F.interpolate(x.permute(0, 3, 1, 2), (32, 32), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        out = model.vision_model(pixel_values=x).pooler_output
        return F.normalize(model.visual_projection(out), dim=-1)

    ids = tok(["a red cube", "a blue cube"], padding=True, return_tensors="pt")
    text = F.normalize(model.text_projection(model.text_model(**ids).pooler_output), dim=-1)
    with torch.no_grad():
        d_img, d_txt = image(edit) - image(src), text[1] - text[0]
        want = (d_img @ d_txt / (d_img.norm(dim=-1) * d_txt.norm())).mean()
    assert abs(value - float(want)) < 1e-5
    assert -1.0 <= value <= 1.0
    # swapping the prompts flips the direction
    assert abs(scorer.directional_similarity(src, edit, "a blue cube", "a red cube") + value) < 1e-5


def test_missing_clip_model_is_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="edit.clip_model"):
        ClipScorer(str(tmp_path / "nothing-here"))


def test_edit_reports_clip_directional_similarity(tiny_clip_dir, tiny_nerf_run, tiny_sd_dir, tiny_prior, tmp_path):
    import json
    from pathlib import Path

    from conftest import EDIT_FAST
    from text3d.edit import open_edit

    preset = Path(__file__).resolve().parents[1] / "configs" / "edit-quickstart.yaml"
    run = open_edit(preset, [f"source={tiny_nerf_run}", "target_prompt=a blue cube", "prior.type=stable-diffusion",
                             f"prior.model={tiny_sd_dir}", f"output_dir={tmp_path}", "steps=1", "edit.metric_views=2",
                             "edit.metric_resolution=32", f"edit.clip_model={tiny_clip_dir}", *EDIT_FAST,
                             "trainer.turntable_frames=0"], prior=tiny_prior)
    metrics = json.loads((run.fit() / "metrics.json").read_text())
    assert -1.0 <= metrics["clip_directional_similarity"] <= 1.0
