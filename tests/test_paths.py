"""Every user-given piece of an output path stays inside output_dir."""

import dataclasses
import os
import random
from pathlib import Path

import pytest

from text3d.run.config import load_config
from text3d.core.errors import ConfigError
from text3d.core.paths import inside, safe_component
from text3d.run.trainer import new_run_dir

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"

NASTY = ["../esc", "../../etc/passwd", "/tmp/x", "/", ".", "..", "...", "", " ", "a/../../b", "~", "~root",
         "C:\\Windows\\x", "..\\..\\x", "a\0b", "-rf", ".hidden", "name\nnewline", "caf\u00e9 \u2603",
         "$HOME", "${oc.env:HOME}", "a" * 300, "./.", "x/./y", "\u202e..", "con", "a:b", "*?<>|"]


def _random_names(n: int, seed: int = 0):
    rng = random.Random(seed)
    alphabet = "ab./\\_-~ \0:\u00e9@$"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def test_safe_component_is_one_plain_component():
    for text in NASTY + _random_names(500):
        part = safe_component(text)
        assert part and part not in (".", "..") and "/" not in part and "\\" not in part and "\0" not in part
        assert not part.startswith((".", "-")) and len(part) <= 48
        assert safe_component(part) == part  # idempotent
    assert safe_component("a red cube") == "a_red_cube"
    assert safe_component("../esc") == "esc" and safe_component("/tmp/x") == "tmp_x"


@pytest.mark.parametrize("field", ["name", "tag", "prompt"])
def test_run_directory_is_always_inside_output_dir(tmp_path, field):
    root = (tmp_path / "outputs").resolve()
    for text in NASTY:  # through the command-line override path (text after '=' taken verbatim)
        text = text.replace("\0", "0")  # a NUL cannot reach argv; the sanitiser is tested above
        cfg = load_config(QUICKSTART, [f"output_dir={root}", f"{field}={text}"])
        assert getattr(cfg, field) == text
        run_dir = new_run_dir(cfg).resolve()
        assert root in run_dir.parents, (field, text, run_dir)
        assert run_dir.parent.parent == root  # exactly <output_dir>/<name>/<tag>@<time>
    for text in _random_names(300, seed=len(field)):
        run_dir = new_run_dir(dataclasses.replace(cfg, **{field: text})).resolve()
        assert run_dir.parent.parent == root, (field, text, run_dir)


def test_a_symlink_inside_output_dir_cannot_lead_out(tmp_path):
    root = tmp_path / "outputs"
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "evil")
    with pytest.raises(ConfigError, match="outside output_dir"):
        inside(root, "evil", "run@1")
    with pytest.raises(ConfigError, match="plain folder name"):
        inside(root, "..", "x")


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    from text3d.core.paths import claim_new_dir

    base = tmp_path / "outputs" / "n" / "a_red_cube@20260101-000000"
    first, second = claim_new_dir(base), claim_new_dir(base)
    assert first == base and second == base.with_name(base.name + "-1") and first.is_dir() and second.is_dir()
