"""benchmarks/eval_edit.py shared by several processes: each edit runs once, in the process that
claimed it; the others pass it over and then read its row (or run it when its process died)."""

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import eval_edit  # noqa: E402


def _fake_edit(calls):
    def one_edit(kind, source, target, guidance, steps, out_dir, prior, extra, export=False, edit_kind="colour"):
        calls.append((kind, target, guidance))
        metrics = {"target": {"hue_ok": True, "colour_share": 1.0, "shape": "cube", "shape_found": "cube", "colour_found": target.split()[1]},
                   "wall_time_s": 1.0, "identity": {"silhouette_iou": 0.95, "mean_colour_change": 0.1},
                   "cleanliness": {"semi_transparent": 0.1, "semi_transparent_source": 0.1, "semi_transparent_excess": 0.0,
                                   "floaters": 0.0, "stray_opacity": 0.0}}
        return None, metrics, {"rest": 0.0}
    return one_edit


def _cell(target):
    return {"scene": "nerf", "seed": 0, "source_prompt": "a red cube", "source": "/src", "mesh": None,
            "kind": "colour", "target": target, "guidance": "pds"}


def _job(cache, target):
    return lambda: eval_edit.cached_edit(cache, _cell(target), 2, cache, None, [])


def test_claimed_edits_are_passed_over_then_read_from_the_other_process(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(eval_edit, "one_edit", _fake_edit(calls))
    cache = tmp_path / "rows"
    other = eval_edit.row_path(cache, _cell("a green cube"), 2, [])
    cache.mkdir()
    Path(f"{other}.claim").write_text(str(os.getppid()))  # a running process (pytest's parent) holds it

    def the_other_process_finishes():
        other.write_text(json.dumps({"target": "a green cube", "by": "other"}))
        Path(f"{other}.claim").unlink()

    timer = threading.Timer(0.3, the_other_process_finishes)
    timer.start()
    seen = []
    rows = eval_edit.collect_rows([_job(cache, "a blue cube"), _job(cache, "a green cube"), _job(cache, "a yellow cube")],
                                  seen.append, poll_s=0.1)
    timer.join()
    assert calls == [("nerf", "a blue cube", "pds"), ("nerf", "a yellow cube", "pds")]  # not the claimed one
    assert [r["target"] for r in rows] == ["a blue cube", "a green cube", "a yellow cube"]  # the table's order
    assert rows[1]["by"] == "other"
    assert [r["target"] for r in seen] == ["a blue cube", "a yellow cube", "a green cube"]  # as they arrived
    assert not list(cache.glob("*.claim"))


def test_an_edit_whose_process_died_is_run_here(tmp_path, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(eval_edit, "one_edit", _fake_edit(calls))
    cache = tmp_path / "rows"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = eval_edit.row_path(cache, _cell("a green cube"), 2, [])
    Path(f"{path}.claim").write_text(str(dead.pid))
    rows = eval_edit.collect_rows([_job(cache, "a green cube")], lambda r: None, poll_s=0.1)
    assert calls == [("nerf", "a green cube", "pds")] and rows[0]["target"] == "a green cube"
    assert json.loads(path.read_text())["target"] == "a green cube"  # cached for the next command
    assert rows == eval_edit.collect_rows([_job(cache, "a green cube")], lambda r: None)  # read, not rerun
    assert len(calls) == 1


def test_rows_the_other_process_finished_meanwhile_are_read_without_waiting(tmp_path, monkeypatch):
    """A passed-over row that is cached by the time this process has run its own is read at once: no
    poll interval per row (21 rows finished long ago once cost 21 sleeps of 10 s)."""
    calls, sleeps = [], []
    monkeypatch.setattr(eval_edit, "one_edit", _fake_edit(calls))
    monkeypatch.setattr(eval_edit.time, "sleep", sleeps.append)
    cache = tmp_path / "rows"
    cache.mkdir()
    others = [eval_edit.row_path(cache, _cell(t), 2, []) for t in ("a green cube", "a pink cube")]
    for path in others:
        Path(f"{path}.claim").write_text(str(os.getppid()))

    def own_edit_then_the_other_finishes():  # the other process finishes while this one runs its own edit
        row = eval_edit.cached_edit(cache, _cell("a blue cube"), 2, cache, None, [])
        for path in others:
            path.write_text(json.dumps({"target": "by other"}))
            Path(f"{path}.claim").unlink()
        return row

    jobs = [_job(cache, "a green cube"), _job(cache, "a pink cube"), own_edit_then_the_other_finishes]
    rows = eval_edit.collect_rows(jobs, lambda r: None, poll_s=10.0)
    assert [r["target"] for r in rows] == ["by other", "by other", "a blue cube"]
    assert sleeps == []


def test_only_the_sources_of_the_chosen_shapes_are_trained(tmp_path, monkeypatch):
    import planned_runs

    trained = []

    def fake_train(root, preset, prompt, seed, extra=()):
        trained.append(prompt)
        return tmp_path / prompt.replace(" ", "_")
    monkeypatch.setattr(planned_runs, "train_run", fake_train)
    monkeypatch.setattr(planned_runs, "find_run", lambda root, preset, prompt, seed: None)
    found = eval_edit.find_sources([tmp_path], [0], ["nerf"], True, ["cube", "capsule"])
    assert trained == ["a red cube", "a purple capsule"]
    assert [s["prompt"] for s in found] == trained
    assert len(eval_edit.find_sources([tmp_path], [0], ["nerf"], True)) == 7  # no filter: every shape
