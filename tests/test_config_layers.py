"""The one config loader every command uses: presets inheriting with ``base:``, layers merged lowest
first, the retype rule, saved configs read literally, and every command's schema behind it."""

import logging
import textwrap
from pathlib import Path

import pytest
import yaml

from text3d.core.config_files import Layer, file_layers, literal_layer, merge_layers, retype_starts
from text3d.core.errors import ConfigError
from text3d.run.config import RUN_SCHEMA, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_preset_inherits_its_base_and_overrides_it(tmp_path):
    write(tmp_path / "presets" / "grand.yaml", """\
        name: grand
        seed: 1
        steps: 10
        guidance: {guidance_scale: 30}
    """)
    write(tmp_path / "presets" / "base.yaml", """\
        base: grand.yaml
        name: base
        steps: 20
        cameras: {width: 48, height: 48}
    """)
    child = write(tmp_path / "child.yaml", """\
        base: presets/base.yaml
        name: child
        cameras: {width: 40}
    """)
    cfg = load_config(child, ["seed=5"])
    assert (cfg.name, cfg.seed, cfg.steps) == ("child", 5, 20)  # own, command line, base
    assert cfg.guidance.guidance_scale == 30.0  # the base's base
    assert (cfg.cameras.width, cfg.cameras.height) == (40, 48)  # a section merges key by key
    assert [Path(layer.origin).name for layer in file_layers(child)] == ["grand.yaml", "base.yaml", "child.yaml"]


def test_the_shipped_from_views_preset_is_the_quickstart_with_four_keys_changed():
    quick = to_dict(load_config(REPO / "configs" / "quickstart.yaml"))
    views = to_dict(load_config(REPO / "configs" / "quickstart-from-views.yaml"))
    changed = {k for k in quick if quick[k] != views[k]}
    assert changed == {"name", "steps", "loss"}  # targets: null is the default
    assert views["loss"]["lambda_image"]["start"] == 1.0 and views["loss"]["lambda_sds"]["start"] == 0.0


@pytest.mark.parametrize("text, words", [
    ("base: missing.yaml\n", ["base", "missing.yaml", "not found"]),
    ("base: [a, b]\n", ["base", "expected the path"]),
    ("base: loop.yaml\n", ["circle"]),
])
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, text, words):
    preset = write(tmp_path / "loop.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_config(preset)
    message = str(e.value)
    assert "\n" not in message and str(preset) in message
    for word in words:
        assert word in message


def test_a_layer_that_retypes_a_section_starts_it_afresh():
    base = Layer({"material": {"type": "camera-light", "ambient": 0.8}, "x": {"size": 2}}, "preset")
    same = Layer({"material": {"type": "camera-light"}}, "overrides")
    other = Layer({"material": {"type": "no-material"}}, "overrides")
    assert merge_layers([base, same])["material"] == {"type": "camera-light", "ambient": 0.8}
    assert merge_layers([base, other])["material"] == {"type": "no-material"}
    assert retype_starts([base, same, other]) == {"material": 2}
    # a later layer's keys of the new type are kept; the keys below the retyping layer are not
    later = Layer({"material": {"ambient": 0.5}}, "item")
    assert merge_layers([base, other, later])["material"] == {"type": "no-material", "ambient": 0.5}


def test_interpolations_see_the_layers_below_and_literal_layers_stay_text():
    preset = Layer({"geometry": {"radius": 0.7}, "cameras": {"eval_distance": "${geometry.radius}"}}, "preset")
    out = merge_layers([preset, literal_layer({"prompt": "a ${geometry.radius} cube"}, "overrides")])
    assert out["cameras"]["eval_distance"] == 0.7 and out["prompt"] == "a ${geometry.radius} cube"


def test_a_saved_config_follows_no_base_and_keeps_dollar_text(tmp_path):
    saved = write(tmp_path / "config.yaml", """\
        base: elsewhere.yaml
        prompt: a ${geometry.radius} cube
    """)
    (layer,) = file_layers(saved, saved=True)
    assert merge_layers([layer])["prompt"] == "a ${geometry.radius} cube"


def test_every_command_reads_its_preset_with_the_same_rules(tmp_path):
    """The retype rule and ``base:`` hold for a multiview preset as for a run's."""
    from text3d.multiview.config import MULTIVIEW_SCHEMA

    child = write(tmp_path / "mv.yaml", f"""\
        base: {REPO / 'configs' / 'multiview-quickstart.yaml'}
        views: 6
    """)
    cfg = MULTIVIEW_SCHEMA.load(child, ["prompt=a cube"])
    assert cfg.top.views == 6 and cfg.prior.type == "pixel"
    retyped = MULTIVIEW_SCHEMA.load(child, ["prompt=a cube", "prior.type=stable-diffusion"])
    assert retyped.prior.type == "stable-diffusion"  # the pixel prior's keys were dropped, not refused
    raw = yaml.safe_load((REPO / "configs" / "multiview-quickstart.yaml").read_text())
    assert set(raw["prior"]) - {"type"}, "the test needs a preset whose prior section has keys of its own"


def test_the_run_schema_names_an_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown key 'stesp' \(did you mean 'steps'\?\)"):
        RUN_SCHEMA.resolve({"stesp": 3})


def test_a_retype_from_the_command_line_names_the_keys_it_drops(tmp_path, caplog):
    """``guidance.type=`` on the command line starts the section afresh; the user is told which of the
    preset's keys no longer apply. A preset retyping its base is deliberate and says nothing."""
    base = write(tmp_path / "base.yaml", """\
        prompt: a red cube
        guidance: {type: sds, guidance_scale: 20.0, t_min: 0.02}
    """)
    child = write(tmp_path / "child.yaml", """\
        base: base.yaml
        guidance: {type: sds-refine, refine_from: 10}
    """)
    with caplog.at_level(logging.WARNING, logger="text3d"):
        cfg = load_config(child)
    assert cfg.guidance.guidance_scale != 20.0 and not caplog.records  # the preset's own retype: silent
    with caplog.at_level(logging.WARNING, logger="text3d"):
        cfg = load_config(base, ["guidance.type=sds-refine", "guidance.t_min=0.05"])
    assert cfg.guidance.t_min.value(0) == 0.05
    (record,) = caplog.records
    message = record.getMessage()
    assert "guidance.type=sds-refine from the command line" in message and "guidance_scale" in message
    assert "t_min" not in message  # given again on the command line: kept
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="text3d"):
        load_config(base, ["guidance.type=sds"])  # the same type: nothing dropped
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="text3d"), pytest.raises(ConfigError):
        load_config(base, ["guidance.type=sds-refine", "guidance.refine_from=-1"])
    assert not caplog.records  # a config that fails gets its one error line alone
