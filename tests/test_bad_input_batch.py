"""Bad input to ``text3d batch``: one line on stderr starting with ``error:``, exit status 2, no
traceback, and nothing written (no batch directory, no run folder)."""

import sys
from pathlib import Path

import pytest
import torch

from text3d.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

FILES = {
    "prompts.txt": "a red cube\na blue sphere\n",
    "empty.txt": "# only a comment\n\n   \n",
    "bad.jsonl": '{"prompt": "a red cube"}\n{"prompt": "a blue sphere",}\n',
    "list.jsonl": '{"prompt": "a red cube"}\n[1, 2]\n',
    "bad.yaml": "- a red cube\n- prompt: a blue sphere\n  seed: [1, 2\n",
    "map.yaml": "prompt: a red cube\n",
    "bad_item.jsonl": '{"prompt": "a red cube", "item": ""}\n',
    "out.jsonl": '{"prompt": "a red cube", "output_dir": "/tmp/elsewhere"}\n',
    "tagged.yaml": "- prompt: a red cube\n  tag: mine\n",
    "object.json": '{"prompt": "a red cube"}',
    "bad.json": '["a red cube",',
    "noheader.csv": ",seed\na red cube,3\n",
    "short.csv": "prompt,seed\na red cube\n",
}
BINARY = {"binary.txt": bytes(range(256)) * 4, "latin1.txt": "a r\xe9d cube\n".encode("latin-1"),
          "nul.txt": b"a red cube\n\0\0\n"}

# (argv after "batch", words the error line must contain)
ROWS = [
    ([QUICKSTART, "missing.txt"], ["prompts file", "missing.txt", "not found"]),
    ([QUICKSTART, "empty.txt"], ["has no prompt"]),
    ([QUICKSTART, "bad.jsonl"], ["bad.jsonl:2", "not valid JSON"]),
    ([QUICKSTART, "list.jsonl"], ["list.jsonl:2", "expected a prompt string or a mapping"]),
    ([QUICKSTART, "bad.yaml"], ["bad.yaml:4", "not valid YAML", "line 3"]),
    ([QUICKSTART, "map.yaml"], ["map.yaml:1", "expected a YAML list"]),
    ([QUICKSTART, "bad_item.jsonl"], ["bad_item.jsonl:1", "'item' must be a non-empty string"]),
    ([QUICKSTART, "out.jsonl"], ["out.jsonl:1", "'output_dir' is not an item override", "BATCH_DIR/<item>"]),
    ([QUICKSTART, "tagged.yaml"], ["tagged.yaml:1", "'tag' is not an item override"]),
    ([QUICKSTART, "object.json"], ["object.json:1", "expected a JSON array"]),
    ([QUICKSTART, "bad.json"], ["bad.json:1", "not valid JSON"]),
    ([QUICKSTART, "noheader.csv"], ["noheader.csv:1", "first row must name"]),
    ([QUICKSTART, "short.csv"], ["short.csv:2", "1 cells for the 2 columns"]),
    ([QUICKSTART, "binary.txt"], ["binary.txt", "not UTF-8 text", "offset 128"]),
    ([QUICKSTART, "latin1.txt"], ["latin1.txt", "not UTF-8 text", "0xe9"]),
    ([QUICKSTART, "nul.txt"], ["nul.txt", "binary file"]),
    ([QUICKSTART, "."], ["prompts file", "is a folder"]),
    (["nope.yaml", "prompts.txt"], ["config file", "nope.yaml"]),
    ([QUICKSTART, "prompts.txt", "guidance.guidance_scal=5"], ["guidance_scal", "did you mean"]),
    ([QUICKSTART, "prompts.txt", "steps=-3"], ["steps"]),
    ([QUICKSTART], ["usage: text3d batch CONFIG PROMPTS"]),
    ([QUICKSTART, "prompts.txt", "--address", "127.0.0.1:9"], ["--address", "cannot reach"]),
    ([QUICKSTART, "prompts.txt", "--address", "ray://127.0.0.1:9"], ["--address", "cannot reach"]),
    ([QUICKSTART, "prompts.txt", "--address", "nowhere"], ["--address", "HOST:PORT"]),
    ([QUICKSTART, "prompts.txt", "--cpus-per-run", "0"], ["--cpus-per-run", "> 0"]),
    ([QUICKSTART, "prompts.txt", "--cpus-per-run", "4096"], ["--cpus-per-run"]),
    ([QUICKSTART, "prompts.txt", "--max-retries", "-1"], ["--max-retries"]),
    (["--resume", "no_such_batch"], ["not a batch directory", "no_such_batch"]),
    (["--resume", "no_such_batch", QUICKSTART], ["--resume takes no CONFIG"]),
]
if not torch.cuda.is_available():  # a machine without GPUs: the local Ray instance would have none
    ROWS.append(([QUICKSTART, "prompts.txt", "--gpus-per-run", "1"], ["--gpus-per-run 1", "no node with 1 GPU"]))


def check_rejected(argv, words, tmp_path, capsys):
    code = main(["batch", *argv, f"output_dir={tmp_path / 'out'}", "--no-progress"]
                if "--resume" not in argv else ["batch", *argv, "--no-progress"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("batch@*"))  # nothing written
    assert captured.out == ""


@pytest.mark.parametrize("argv,words", ROWS, ids=[" ".join(Path(a).name for a in r[0]) for r in ROWS])
def test_bad_batch_input(argv, words, tmp_path, monkeypatch, capsys):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    for name, data in BINARY.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    check_rejected(argv, words, tmp_path, capsys)


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch, capsys):
    (tmp_path / "prompts.txt").write_text(FILES["prompts.txt"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    check_rejected([QUICKSTART, "prompts.txt"], ['pip install -e ".[ray]"'], tmp_path, capsys)
