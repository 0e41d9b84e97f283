"""Bad input to ``text3d multiview``: one ``error:`` line naming the value and the valid ones, exit 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "multiview-quickstart.yaml")


CASES = [
    (["views=0"], ["views", "[1, 64]", "0"]),
    (["views=-3"], ["views", "-3"]),
    (["mode=grid", "views=4", "grid=3x2"], ["grid", "3x2", "views=4", "2x2", "1x4"]),
    (["mode=grid", "views=4", "grid=big"], ["grid", "big", "2x2"]),
    (["mode=sideways"], ["mode", "sideways", "independent", "shared", "full", "grid"]),
    (["noise=pink"], ["noise", "pink", "independent", "shared"]),
    (["resolution=64"], ["resolution", "64", "32"]),
    (["azimuths=[0,90]", "views=3"], ["azimuths", "views=3"]),
    (["prompt="], ["prompt", "empty"]),
    (["sampler.steps=0"], ["sampler.steps", "[1, 1000]"]),
    (["elevation=120"], ["elevation", "120"]),
    (["colour=red"], ["unknown key", "colour"]),
    (["prior.type=magic"], ["prior.type", "magic", "pixel", "stable-diffusion"]),
    (["attention.layers.levels=[down.9]"], ["levels", "down.9", "mid"]),
]


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "text3d", "multiview", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def check(proc, words, out_dir):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out_dir.exists() or not any(out_dir.rglob("*")), list(out_dir.rglob("*"))
    assert proc.stdout == ""


@pytest.mark.parametrize("args,words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input(tmp_path, args, words):
    out = tmp_path / "out"
    check(run_cli([QUICK, f"output_dir={out}", *args], tmp_path), words, out)


def test_missing_config_file(tmp_path):
    out = tmp_path / "out"
    check(run_cli([str(tmp_path / "nope.yaml"), f"output_dir={out}"], tmp_path), ["nope.yaml", "not found"], out)


@pytest.mark.parametrize("mode", ["shared", "full", "grid"])
def test_a_unet_without_self_attention(tmp_path, no_attention_model, mode):
    out = tmp_path / "out"
    args = [QUICK, f"output_dir={out}", "prior.type=stable-diffusion", f"prior.model={no_attention_model}",
            f"mode={mode}", "views=2", "prompting.view_dependent=true"]
    check(run_cli(args, tmp_path), ["self-attention", "independent", str(no_attention_model)], out)


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_output_dir_that_cannot_be_written_is_refused_before_the_prior_loads(tmp_path, where):
    """As run and video do: one line naming output_dir, before any model loads (was a traceback after)."""
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    out = a_file if where == "file" else a_file / "sub"
    proc = run_cli([QUICK, f"output_dir={out}", "prompt=a cube"], tmp_path)
    check(proc, ["output_dir", "is a file"], tmp_path / "nothing")
    assert a_file.read_text() == "x"
