"""`text3d train-prior` with bad input, and its output folder: never deletes what it did not write."""

import json
from pathlib import Path

import pytest

from text3d.cli import main

# A recipe that trains in seconds (the same shape as tests/test_prior.py's).
TINY = ["iterations=1", "batch_size=4", "log_every=1", "checkpoint_every=1", "snapshot_every=0",
        "data.bank_views_per_shape=2", "data.bank_refresh_per_step=1",
        "model.unet_channels=[8,16,16]", "model.norm_groups=4", "model.attention_heads=2",
        "model.text_hidden_size=16", "model.text_heads=2", "model.text_layers=1", "model.text_intermediate_size=32"]

BAD_RECIPES = [
    (["lr=-1"], ["lr", "(0, inf)"]),
    (["lr=nan"], ["lr", "finite"]),
    (["iterations=-5"], ["iterations"]),
    (["batch_size=0"], ["batch_size"]),
    (["ema_decay=1"], ["ema_decay", "[0, 1)"]),
    (["cond_dropout=1.5"], ["cond_dropout"]),
    (["seed=99999999999999999999"], ["seed", "64 bits"]),
    (["data.shapes=[blob]"], ["data.shapes", "blob"]),
    (["model.resolution=0"], ["model.resolution"]),
    (["iterations={"], ["iterations", "integer"]),
    (["lr_typo=1"], ["lr_typo", "valid keys"]),
]


@pytest.mark.parametrize("extra,words", BAD_RECIPES, ids=[" ".join(r[0]) for r in BAD_RECIPES])
def test_bad_recipe(tmp_path, expect_bad_input, extra, words):
    expect_bad_input(["train-prior", *TINY, *extra, "--out", tmp_path / "prior", "--no-progress"], *words,
                     watch=tmp_path)


def test_an_unrelated_folder_or_file_at_out_survives(tmp_path, expect_bad_input):
    """The data-loss bug: --out DIR used to delete whatever was there and exit 0."""
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    expect_bad_input(["train-prior", *TINY, "--out", folder, "--no-progress"], "--out", "holds other files",
                     "notes.txt", watch=tmp_path)
    assert (folder / "notes.txt").read_text() == "precious" and (folder / "sub" / "data.bin").is_file()
    a_file = tmp_path / "report.pdf"
    a_file.write_bytes(b"%PDF")
    expect_bad_input(["train-prior", *TINY, "--out", a_file, "--no-progress"], "--out", "is a file", watch=tmp_path)
    assert a_file.read_bytes() == b"%PDF"
    expect_bad_input(["train-prior", *TINY, "--out", a_file / "prior", "--no-progress"], "--out", "is a file",
                     watch=tmp_path)
    expect_bad_input(["train-prior", *TINY, "--out", "/proc/text3d-prior", "--no-progress"], "--out", "cannot write",
                     watch=tmp_path)


def test_replacing_an_earlier_prior_is_explicit_and_whole(tmp_path, expect_bad_input, capsys):
    out = tmp_path / "prior"
    assert main(["train-prior", *TINY, "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    first = json.loads((out / "text3d_prior.json").read_text())
    expect_bad_input(["train-prior", *TINY, "iterations=2", "--out", out, "--no-progress"], "--out",
                     "earlier prior", "--replace", watch=tmp_path)
    assert main(["train-prior", *TINY, "iterations=2", "--out", str(out), "--replace", "--no-progress"]) == 0
    second = json.loads((out / "text3d_prior.json").read_text())
    assert (first["iterations"], second["iterations"]) == (1, 2)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model_index.json", "scheduler", "text3d_prior.json", "text_encoder", "tokenizer", "unet"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    # a prior folder with a foreign file in it is no longer "ours": --replace does not touch it
    (out / "mine.txt").write_text("x")
    expect_bad_input(["train-prior", *TINY, "iterations=2", "--out", out, "--replace", "--no-progress"],
                     "holds other files", watch=tmp_path)


def test_damaged_prior_metadata_is_one_line(tmp_path, expect_bad_input):
    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "text3d_prior.json").write_text('{"format_version": 2, "recipe": {')
    cfg = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    expect_bad_input(["run", cfg, f"prior.model={prior}", f"output_dir={tmp_path / 'o'}", "steps=1"],
                     "text3d_prior.json", "damaged", "not valid JSON", watch=tmp_path)


def test_damaged_model_index_is_one_line(tmp_path, tiny_sd_dir, expect_bad_input):
    import shutil

    model = shutil.copytree(tiny_sd_dir, tmp_path / "sd")
    (model / "model_index.json").write_text("{ truncated")
    cfg = Path(__file__).resolve().parents[1] / "configs" / "smoke-tiny-sd.yaml"
    expect_bad_input(["run", cfg, f"prior.model={model}", f"output_dir={tmp_path / 'o'}", "steps=1"],
                     "model_index.json", "damaged", watch=tmp_path)
