"""`text3d export` with bad input, damaged checkpoints, and an export killed half way."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from text3d.cli import main

SMALL = ["--resolution", "32", "--faces", "500", "--texture-size", "32"]

BAD_OPTIONS = [
    (["--size", "nan"], ["--size", "finite"]),
    (["--size", "-1"], ["--size"]),
    (["--faces", "-1"], ["--faces"]),
    (["--resolution", "0"], ["--resolution"]),
    (["--resolution", "5000"], ["--resolution"]),
    (["--texture-size", "5"], ["--texture-size"]),
    (["--level", "nan"], ["--level"]),
    (["--level", "-2"], ["--level"]),
    (["--min-component-ratio", "inf"], ["--min-component-ratio"]),
    (["--format", "fbx"], ["--format", "fbx", "glb"]),
]


@pytest.mark.parametrize("opts,words", BAD_OPTIONS, ids=[" ".join(r[0]) for r in BAD_OPTIONS])
def test_bad_option(tiny_run_dir, tmp_path, expect_bad_input, opts, words):
    expect_bad_input(["export", tiny_run_dir, *SMALL, *opts, "--out", tmp_path / "x"], *words, watch=tmp_path)


def test_not_a_run_and_no_checkpoint(tmp_path, expect_bad_input):
    expect_bad_input(["export", tmp_path / "nowhere"], "not a run directory", watch=tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("prompt: x\n")
    expect_bad_input(["export", run], "no checkpoint", watch=tmp_path)


def test_out_that_is_a_file_or_a_foreign_folder_is_refused(tiny_run_dir, tmp_path, expect_bad_input):
    a_file = tmp_path / "mesh.glb"
    a_file.write_bytes(b"glTF")
    expect_bad_input(["export", tiny_run_dir, *SMALL, "--out", a_file], "--out", "is a file", watch=tmp_path)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "scene.blend").write_bytes(b"BLENDER")
    expect_bad_input(["export", tiny_run_dir, *SMALL, "--out", folder], "--out", "holds other files",
                     "scene.blend", watch=tmp_path)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(tiny_run_dir, tmp_path, caplog, capsys):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    newest = (run / "ckpts" / "last").resolve()
    st = newest / "state.safetensors"
    st.write_bytes(st.read_bytes()[:100])  # truncated
    with caplog.at_level("WARNING"):
        assert main(["export", str(run), *SMALL, "--out", str(tmp_path / "x")]) == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(st) in warned and "damaged" in warned and "step 2" in warned
    assert json.loads((tmp_path / "x" / "export.json").read_text())["source"]["step"] == 2


@pytest.mark.parametrize("damage", ["empty safetensors", "truncated json", "wrong types", "list json"])
def test_each_kind_of_damage_is_named(tiny_run_dir, tmp_path, caplog, damage):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    newest = (run / "ckpts" / "last").resolve()
    js = newest / "state.json"
    if damage == "empty safetensors":
        (newest / "state.safetensors").write_bytes(b"")
        name = "state.safetensors"
    elif damage == "truncated json":
        js.write_text(js.read_text()[:40])
        name = "state.json"
    elif damage == "wrong types":
        meta = json.loads(js.read_text())
        js.write_text(json.dumps({**meta, "step": "three", "skipped_steps": 7}))
        name = "state.json"
    else:
        js.write_text("[1, 2]")
        name = "state.json"
    with caplog.at_level("WARNING"):
        assert main(["export", str(run), *SMALL, "--out", str(tmp_path / "x")]) == 0
    assert any(name in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_every_checkpoint_damaged(tiny_run_dir, tmp_path, expect_bad_input):
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    for ckpt in (run / "ckpts").glob("step-*"):
        (ckpt / "state.safetensors").write_bytes(b"")
    expect_bad_input(["export", run, *SMALL], "every checkpoint", "damaged", watch=tmp_path)


def test_sigkill_mid_export_leaves_the_previous_set_and_the_next_export_cleans_up(tiny_run_dir, tmp_path):
    """An export either completes its whole set or leaves the previous one as it was."""
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    export = run / "export"
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    assert set(before) == {"mesh.glb", "export.json"}
    cmd = [sys.executable, "-m", "text3d.cli", "export", str(run), "--format", "glb,obj,ply", "--resolution", "48",
           "--faces", "800", "--texture-size", "64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 180
    try:
        while time.time() < deadline:  # kill once the staging folder holds a file, before the swap
            staged = [f for d in run.glob(".export.tmp-*") for f in d.iterdir()]
            if staged:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)
        else:
            pytest.fail("the export never staged a file")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before  # the old set, untouched
    assert list(run.glob(".export.tmp-*"))  # the killed writer's hidden staging folder is there ...
    assert main(["export", str(run), "--format", "glb,obj", *SMALL]) == 0
    assert not list(run.glob(".export*"))  # ... and the next export removes it
    manifest = json.loads((export / "export.json").read_text())
    listed = {name for names in manifest["files"].values() for name in names}
    assert {p.name for p in export.iterdir()} == listed | {"export.json"}
