"""Staged folders: a reader sees the whole old file set or the whole new one, whatever is killed when."""

import os

import pytest

import text3d.core.io as io
from text3d.core.bounds import Bounds, bounded, check_bounds
from text3d.core.errors import ConfigError
from text3d.core.io import recover_folder, staged_folder


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _make(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _read(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_staged_folder_swaps_the_whole_set(tmp_path):
    final = tmp_path / "export"
    _make(final, {"a.glb": "old", "export.json": "old"})
    with staged_folder(final) as staging:
        (staging / "a.obj").write_text("new")
        assert _read(final) == {"a.glb": "old", "export.json": "old"}  # untouched until the block ends
    assert _read(final) == {"a.obj": "new"} and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_failure_inside_the_block_keeps_the_old_set(tmp_path):
    final = tmp_path / "export"
    _make(final, {"a.glb": "old"})
    with pytest.raises(RuntimeError):
        with staged_folder(final) as staging:
            (staging / "a.glb").write_text("half")
            raise RuntimeError("writer failed")
    assert _read(final) == {"a.glb": "old"} and sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_kill_between_the_two_renames_is_undone_by_the_next_call(tmp_path, monkeypatch):
    final = tmp_path / "export"
    _make(final, {"a.glb": "old"})
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is aside, the new one not yet in place
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", replace_then_die)
    with pytest.raises(Killed):
        with staged_folder(final) as staging:
            (staging / "a.glb").write_text("new")
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert not final.exists()  # what a reader would see right after such a kill ...
    recover_folder(final)  # ... until the next export (or this) puts the old set back
    assert _read(final) == {"a.glb": "old"}


def test_stale_staging_of_a_dead_process_is_removed(tmp_path):
    final = tmp_path / "export"
    _make(final, {"a.glb": "old"})
    _make(tmp_path / ".export.tmp-999999999-abc", {"a.glb": "half"})  # no such process
    _make(tmp_path / f".export.tmp-{os.getppid()}-abc", {"a.glb": "busy"})  # a live process: kept
    recover_folder(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".export.tmp-{os.getppid()}-abc", "export"]


def test_bounds_messages_name_the_key_and_the_range():
    from dataclasses import dataclass, field

    @dataclass
    class Section:
        rate: float = bounded(0.5, lo=0, hi=1, hi_open=True)
        sizes: list = bounded(default_factory=lambda: [1, 2], lo=1)
        free: float = 0.0
        nested: dict = field(default_factory=dict)

    check_bounds(Section(), "s")
    for obj, words in [(Section(rate=1.0), "s.rate: must be in [0, 1), got 1.0"),
                       (Section(sizes=[1, 0]), "s.sizes[1]: must be in [1, inf), got 0"),
                       (Section(free=float("nan")), "s.free: must be a finite number, got nan"),
                       (Section(nested={"x": float("inf")}), "s.nested.x: must be a finite number, got inf")]:
        with pytest.raises(ConfigError) as e:
            check_bounds(obj, "s")
        assert str(e.value) == words
    assert Bounds(0, None, lo_open=True).describe() == "(0, inf)"


def _dead_pid():
    """The id of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_until_released(tmp_path):
    result = tmp_path / "rows" / "edit.json"
    assert io.try_claim(result)  # creates the folder
    assert (tmp_path / "rows" / "edit.json.claim").read_text() == str(os.getpid())
    assert not io.try_claim(result)  # held (by this very process)
    io.release_claim(result)
    assert not (tmp_path / "rows" / "edit.json.claim").exists()
    assert io.try_claim(result)


def test_a_running_process_keeps_its_claim_and_a_dead_one_loses_it(tmp_path):
    import subprocess
    import sys

    result = tmp_path / "edit.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "edit.json.claim").write_text(str(other.pid))
        assert not io.try_claim(result)
    finally:
        other.kill()
        other.wait()
    assert io.try_claim(result)  # its process is gone: taken over
    assert (tmp_path / "edit.json.claim").read_text() == str(os.getpid())
    io.release_claim(result)
    (tmp_path / "edit.json.claim").write_text(str(_dead_pid()))
    assert io.try_claim(result)


def test_an_empty_claim_is_held_only_for_its_grace_period(tmp_path):
    result = tmp_path / "edit.json"
    lock = tmp_path / "edit.json.claim"
    lock.write_text("")  # its writer has created it and not yet written its id
    assert not io.try_claim(result)
    old = lock.stat().st_mtime - io.CLAIM_GRACE_S - 1
    os.utime(lock, (old, old))  # ... or was killed before it could
    assert io.try_claim(result)
