"""The module paths of text3d 0.1 still import after the move to one package per stage: each gives
the module it moved to (the same object) with a DeprecationWarning naming the new path."""

import json
import subprocess
import sys
from pathlib import Path

from text3d.core.moved import MOVED

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, json, sys, warnings
from text3d.core.moved import MOVED
out = {}
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    out[old] = {"same": module is importlib.import_module(new), "name": module.__name__,
                "warned": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]}
from text3d.config import load_config  # the README's name of 0.1
from text3d.run.config import load_config as new_load_config
out["load_config"] = load_config is new_load_config
print(json.dumps(out))
"""


def test_every_old_path_imports_the_moved_module_with_a_warning():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=REPO, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found.pop("load_config") is True
    for old, new in MOVED.items():
        assert found[old]["same"] and found[old]["name"] == new, (old, found[old])
        assert any(new in w for w in found[old]["warned"]), (old, found[old]["warned"])


def test_no_old_module_file_is_left_in_the_package():
    for old in MOVED:
        assert not (REPO / (old.replace(".", "/") + ".py")).exists(), old
