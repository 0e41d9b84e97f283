"""Where does shared attention act on an embedded prior? Layers x steps x processor, against independent sampling.

Issue 27 asks, where a mechanism shows no effect, *which layers, which steps, which resolution*. This
probe samples sets of ``N`` views (independent initial and ancestral noise, ``reference_camera 0``,
the documented sampler) with a processor on a subset of the UNet's self-attention layers during a
window of the sampling steps, and reports

- **view match**: the share of non-reference views whose judged base colour, stripe colour and shape
  equal the reference view's (independent sampling: chance, about 1/8);
- **set agreement**: the share of sets whose views all match (what ``eval_multiview.py`` reports).

Processors: ``shared`` (StyleAligned: own + reference keys/values, AdaIN of queries and keys),
``shared-shift`` (the same with the reference's logits + log 2, StyleAligned's transfer demo) and
``kv-first`` (Text2Video-Zero: the reference's keys/values only, the strongest coupling attention
can give); a ``+gn`` suffix adds StyleAligned's shared GroupNorm statistics. Layer groups are read from the UNet's processor names (``down``, ``mid``, ``up``, and
``top`` = the down and up blocks at the highest latent resolution); a step window ``a:b`` installs the
processor for steps ``a <= i < b`` of the sampler only. ``--zero`` adds two controls that say whether
self-attention carries colour at all: the share of views whose colour changes when every
self-attention layer outputs zeros, or the mean of its values (content-free), with the same noise.
``--up-means`` asks where the views' own colour comes back from: every up-block ResNet input (the
backbone and the skip features, concatenated) of the other views gets the reference's spatial mean
per channel, alone and with ``kv-first`` attention.

    python benchmarks/probe_shared_attention.py --prior latent --layers all,down,mid,up,top --steps 0:50
    python benchmarks/probe_shared_attention.py --prior latent --layers all --steps 0:10,0:25,10:50 --procs kv-first
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_multiview import LATENT_UNDER_SPECIFIED, judge_sets, load_prior  # noqa: E402

from text3d.guidance.attention import (AttentionInstall, KeyframeAttnProcessor, SharedAttnProcessor, SharedNormInstall,  # noqa: E402
                                       _SelfAttnBase, self_attention_layers)
from text3d.multiview.modes import MultiviewSettings, SamplerConfig, sample_multiview  # noqa: E402
from text3d.scene.cameras import turntable  # noqa: E402


class Windowed(_SelfAttnBase):
    """``inner``'s core while ``state['on']``, plain per-image attention otherwise."""

    def __init__(self, inner: _SelfAttnBase, state: Dict[str, bool]):
        self.inner, self.state, self.num_views = inner, state, inner.num_views

    def core(self, q, k, v, n, scale):
        if self.state["on"]:
            return self.inner.core(q, k, v, n, scale)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


class ZeroAttn(_SelfAttnBase):
    """Control: self-attention outputs nothing (the block's residual passes unchanged)."""

    def core(self, q, k, v, n, scale):
        return torch.zeros_like(q)


class MeanAttn(_SelfAttnBase):
    """Control: every token gets the mean of the image's values (attention that ignores content)."""

    def core(self, q, k, v, n, scale):
        return v.mean(-2, keepdim=True).expand_as(q).contiguous()


@contextlib.contextmanager
def reference_means_on_up_path(unet, n: int):
    """Give every up-block ResNet input of views 1..n-1 of each group view 0's per-channel spatial mean."""
    def hook(module, args):
        x = args[0]
        g = x.view(x.shape[0] // n, n, *x.shape[1:])
        mean = g.mean((-1, -2), keepdim=True)
        g = torch.cat([g[:, :1], g[:, 1:] - mean[:, 1:] + mean[:, :1]], dim=1)
        return (g.view_as(x), *args[1:])

    handles = [r.register_forward_pre_hook(hook) for block in unet.up_blocks for r in block.resnets]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


PROCESSORS: Dict[str, Callable[..., _SelfAttnBase]] = {
    "shared": lambda n, shift: SharedAttnProcessor(num_views=n),
    "kv-first": lambda n, shift: KeyframeAttnProcessor("first", num_views=n),
    "shared-shift": lambda n, shift: SharedAttnProcessor(num_views=n, shared_score_shift=shift),  # log 2: StyleAligned's demo
}


def layer_groups(unet) -> Dict[str, List[str]]:
    """Self-attention processor names by group: all, down, mid, up, top (highest latent resolution)."""
    names = self_attention_layers(unet)
    last_up = f"up_blocks.{len(unet.up_blocks) - 1}."
    return {"all": names, "down": [x for x in names if x.startswith("down_blocks.")],
            "mid": [x for x in names if x.startswith("mid_block.")],
            "up": [x for x in names if x.startswith("up_blocks.")],
            "top": [x for x in names if x.startswith(("down_blocks.0.", last_up))]}


def sample_sets(prior, prompts: Sequence[str], seeds: Sequence[int], n: int, eta: float, steps: int,
                install: Optional[Callable[[], contextlib.AbstractContextManager]] = None,
                window: Optional[range] = None, state: Optional[Dict[str, bool]] = None) -> List[dict]:
    """Judge one set per prompt x seed (``install`` puts the processors on; ``window`` says when they act)."""
    size = prior.image_size
    cams = turntable(n, 15.0, 3.0, 32.0, size, size)
    settings = MultiviewSettings(mode="independent", noise="independent", sampler=SamplerConfig(steps=steps, eta=eta))
    out = []
    for p in prompts:
        for seed in seeds:
            if state is not None:
                state["on"] = window is None or 0 in window
            progress = None if state is None else (lambda i, total: state.__setitem__("on", window is None or i in window))
            with (install() if install else contextlib.nullcontext()):
                images = sample_multiview(prior, [p] * n, cams, n, settings, torch.Generator().manual_seed(seed),
                                          progress=progress)
            j = judge_sets(images, cams, n)
            out.append({k: j[k][0] for k in ("base", "stripe", "shape")})
    return out


def match_figures(sets: List[dict]) -> Dict[str, float]:
    match, agree = [], []
    for s in sets:
        m = (s["base"] == s["base"][0]) & (s["stripe"] == s["stripe"][0]) & (s["shape"] == s["shape"][0])
        match.append(m[1:].float().mean().item())
        agree.append(float(bool(m.all()) and int(s["base"][0]) >= 0 and int(s["stripe"][0]) >= 0))
    return {"view_match": sum(match) / len(match), "set_agreement": sum(agree) / len(agree)}


def colour_diversity(sets: List[dict], prompts: Sequence[str]) -> Dict[str, float]:
    """Per prompt, the share of its views (every seed) that fall on the commonest (base, stripe) colour pair.

    Independent sampling's figure says how much agreement chance alone gives: a prior that has collapsed
    onto one likely colour agrees across views without any sharing."""
    per = len(sets) // len(prompts)
    out = {}
    for i, p in enumerate(prompts):
        pairs = [(int(b), int(s)) for st in sets[i * per:(i + 1) * per] for b, s in zip(st["base"], st["stripe"])]
        out[p] = max(pairs.count(x) for x in set(pairs)) / len(pairs)
    return out


def changed_share(a: List[dict], b: List[dict]) -> float:
    """Share of views whose base or stripe colour differs between two samplings with the same noise."""
    diff = [((x["base"] != y["base"]) | (x["stripe"] != y["stripe"])).float().mean().item() for x, y in zip(a, b)]
    return sum(diff) / len(diff)


def parse_window(text: str, steps: int) -> range:
    a, b = (int(x) for x in text.split(":"))
    if not 0 <= a < b <= steps:
        raise SystemExit(f"--steps: window {text!r} must be a:b with 0 <= a < b <= {steps}")
    return range(a, b)


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", choices=["pixel", "latent"], default="latent")
    ap.add_argument("--prior-model", default="builtin", help="the prior's folder (default: the shipped one)")
    ap.add_argument("--procs", default="shared,kv-first",
                    help=f"comma-separated: {', '.join(PROCESSORS)}, each optionally with +gn (shared GroupNorm statistics)")
    ap.add_argument("--layers", default="all,down,mid,up,top", help="comma-separated layer groups")
    ap.add_argument("--steps", default="0:50", help="comma-separated step windows a:b")
    ap.add_argument("--eta", type=float, default=1.0, help="DDIM eta (documented sampler: 1)")
    ap.add_argument("--sampler-steps", type=int, default=50)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (held-out sets)")
    ap.add_argument("--shift", type=float, default=math.log(2), help="shared-shift's logit shift (default log 2)")
    ap.add_argument("--prompts", default=",".join(LATENT_UNDER_SPECIFIED), help="comma-separated")
    ap.add_argument("--zero", action="store_true", help="add the zero / mean self-attention controls")
    ap.add_argument("--up-means", action="store_true", help="add the up-path feature-mean rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    return ap


def seed_list(args: argparse.Namespace) -> List[int]:
    """The sets' seeds: ``--seeds`` of them from ``--first-seed`` (a held-out split starts past the tuned seeds)."""
    return list(range(args.first_seed, args.first_seed + args.seeds))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior, args.prior_model)
    groups = layer_groups(prior.unet)
    prompts, seeds, n = args.prompts.split(","), seed_list(args), args.views
    run = lambda **kw: sample_sets(prior, prompts, seeds, n, args.eta, args.sampler_steps, **kw)  # noqa: E731
    rows: List[dict] = []

    def report(row: dict) -> None:
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    t0 = time.perf_counter()
    base = run()
    diversity = colour_diversity(base, prompts)
    report({"proc": "independent", "layers": "-", "steps": "-", **match_figures(base), "seconds": time.perf_counter() - t0,
            "top_colour_share": sum(diversity.values()) / len(diversity)})
    print("commonest colour share per prompt: " + ", ".join(f"{p!r} {v:.2f}" for p, v in diversity.items()), flush=True)
    if args.zero:
        for name, cls in (("zero", ZeroAttn), ("mean", MeanAttn)):
            sets = run(install=lambda cls=cls: AttentionInstall(prior.unet, lambda _name: cls()))
            report({"proc": f"control-{name}", "layers": "all", "steps": "-", **match_figures(sets),
                    "colour_changed": changed_share(base, sets)})
    if args.up_means:
        for proc in ("none", "kv-first"):
            def install(proc=proc):
                stack = contextlib.ExitStack()
                stack.enter_context(reference_means_on_up_path(prior.unet, n))
                if proc != "none":
                    stack.enter_context(AttentionInstall(prior.unet, lambda _name: PROCESSORS[proc](n, args.shift)))
                return stack
            report({"proc": f"up-means+{proc}", "layers": "all", "steps": "0:50", **match_figures(run(install=install))})
    for proc in args.procs.split(","):
        for group in args.layers.split(","):
            for text in args.steps.split(","):
                window, state = parse_window(text, args.sampler_steps), {"on": True}
                name, gn = proc.removesuffix("+gn"), proc.endswith("+gn")  # +gn: StyleAligned's shared GroupNorm too
                factory = lambda _name, name=name, state=state: Windowed(PROCESSORS[name](n, args.shift), state)  # noqa: E731

                def install(group=group, factory=factory, gn=gn):
                    stack = contextlib.ExitStack()
                    stack.enter_context(AttentionInstall(prior.unet, factory, groups[group]))
                    if gn:
                        stack.enter_context(SharedNormInstall(prior.unet, n))
                    return stack
                t0 = time.perf_counter()
                sets = run(install=install, window=window, state=state)
                report({"proc": proc, "layers": group, "steps": text, **match_figures(sets),
                        "seconds": time.perf_counter() - t0})
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows, "top_colour_share": diversity}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
