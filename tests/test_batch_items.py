"""The PROMPTS file of text3d batch and the per-item configs (no Ray needed)."""

from pathlib import Path

from text3d.batch.items import read_items
from text3d.batch.state import BatchOptions, plan_batch

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def test_text_file_one_prompt_per_line_with_unique_folder_names(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# a comment\na red cube\n\n  a red cube  \na/../b: c\nbatch.json\n")
    items = read_items(path)
    assert [(i.line, i.prompt) for i in items] == [(2, "a red cube"), (4, "a red cube"), (5, "a/../b: c"),
                                                   (6, "batch.json")]
    assert [i.name for i in items] == ["a_red_cube", "a_red_cube-2", "a_.._b_c", "batch.json-2"]


def test_csv_header_names_the_overrides_and_a_json_array_lists_items(tmp_path):
    c = tmp_path / "items.csv"
    c.write_text('prompt,seed,guidance.guidance_scale\n"a red cube, shiny",3,\na blue cone,,40\n\n')
    items = read_items(c)
    assert [(i.line, i.name) for i in items] == [(2, "a_red_cube_shiny"), (3, "a_blue_cone")]
    assert items[0].overrides == {"prompt": "a red cube, shiny", "seed": "3"}  # an empty cell is left to the config
    assert items[1].nested_overrides() == {"prompt": "a blue cone", "guidance": {"guidance_scale": "40"}}
    j = tmp_path / "items.json"
    j.write_text('["a pink torus", {"prompt": "a red cube", "seed": 7}]')
    assert [(i.prompt, i.overrides.get("seed")) for i in read_items(j)] == [("a pink torus", None), ("a red cube", 7)]


def test_csv_values_are_typed_by_the_config(tmp_path):
    c = tmp_path / "items.csv"
    c.write_text("prompt,seed\na red cube,3\n")
    _, configs = plan_batch(QUICKSTART, c, [f"output_dir={tmp_path}"], BatchOptions())
    assert configs["a_red_cube"].seed == 3 and configs["a_red_cube"].prompt == "a red cube"


def test_yaml_and_jsonl_items_keep_their_lines_and_nest_dotted_keys(tmp_path):
    y = tmp_path / "items.yaml"
    y.write_text("# header\n- a blue cone\n- prompt: a red cube\n  item: cube one\n  guidance.guidance_scale: 30\n"
                 "  geometry: {radius: 0.8}\n")
    items = read_items(y)
    assert [i.line for i in items] == [2, 3] and [i.name for i in items] == ["a_blue_cone", "cube_one"]
    assert items[1].nested_overrides() == {"prompt": "a red cube", "guidance": {"guidance_scale": 30},
                                           "geometry": {"radius": 0.8}}
    j = tmp_path / "items.jsonl"
    j.write_text('"a pink torus"\n\n{"prompt": "a red cube", "config": "other.yaml", "seed": 7}\n')
    items = read_items(j)
    assert [(i.line, i.prompt, i.config) for i in items] == [(1, "a pink torus", None), (3, "a red cube", "other.yaml")]
    assert items[1].overrides == {"prompt": "a red cube", "seed": 7}


def test_item_overrides_apply_before_interpolation_and_bad_ones_fail_alone(tmp_path):
    j = tmp_path / "items.jsonl"
    j.write_text('{"prompt": "a red cube", "geometry.radius": 0.8}\n{"prompt": "x", "seed": "many"}\n')
    state, configs = plan_batch(QUICKSTART, j, [f"output_dir={tmp_path / 'out'}", "steps=7"], BatchOptions())
    cfg = configs["a_red_cube"]
    assert cfg.geometry.radius == 0.8 and cfg.renderer.radius == 0.8  # ${geometry.radius} follows the item
    assert cfg.steps == 7 and state.items[0].total_steps == 7
    assert state.items[1].status == "failed" and "seed" in state.items[1].error and "line 2" in state.items[1].error
    assert "x" not in configs and not (tmp_path / "out").exists()  # planning writes nothing
