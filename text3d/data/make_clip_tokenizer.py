"""Convert CLIP's BPE file into the ``vocab.json`` + ``merges.txt`` that ``CLIPTokenizer`` loads.

The source is ``open_clip/bpe_simple_vocab_16e6.txt.gz`` (MIT licence), the BPE vocabulary of
OpenAI CLIP as shipped in the ``open-clip-torch`` wheel. Get it without installing the package
(installing it pulls a CUDA torch)::

    pip download --no-deps open-clip-torch -d /tmp/oc
    python -m zipfile -e /tmp/oc/open_clip_torch-*.whl /tmp/oc/x
    python text3d/data/make_clip_tokenizer.py /tmp/oc/x/open_clip/bpe_simple_vocab_16e6.txt.gz text3d/data/clip_tokenizer

The construction is CLIP's own: the 256 byte symbols of byte-level BPE, the same symbols with the
word-end marker ``</w>``, one token per merge of the first ``49152 - 256 - 2`` merges, then
``<|startoftext|>`` and ``<|endoftext|>``: 49408 tokens, ids identical to OpenAI CLIP's.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Dict, List

N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> Dict[int, str]:
    """Byte -> printable character, the reversible table of byte-level BPE (GPT-2 and CLIP).

    The order matters, it fixes the token ids: printable bytes first (mapped to themselves), then
    the other bytes in ascending order, mapped to ``chr(256 + k)``.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    for k, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + k)
    return table


def convert(bpe_gz: Path, out_dir: Path) -> List[str]:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is the "#version" header
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                                        encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("out_dir", type=Path, help="folder for vocab.json and merges.txt")
    args = parser.parse_args()
    vocab = convert(args.bpe_gz, args.out_dir)
    print(f"wrote {len(vocab)} tokens to {args.out_dir}")


if __name__ == "__main__":
    main()
