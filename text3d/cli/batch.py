"""``text3d batch CONFIG PROMPTS [key=value ...]`` (or ``--resume BATCH_DIR``): many runs scheduled by Ray.

Options checked, the batch started or resumed, one progress bar over the whole batch, the batch
directory printed last.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from text3d.core.errors import Text3DError

from .common import Verb, register

EPILOG = """\
PROMPTS:
  prompts.txt    one prompt per line (# comments and blank lines skipped)
  items.jsonl    one JSON object of overrides per line: {"prompt": "a red cube", "seed": 3}
  items.yaml     a list of prompts or override mappings
  In an override set, "item" names the item's folder and "config" picks another preset.

examples:
  text3d batch configs/quickstart.yaml prompts.txt steps=200 --cpus-per-run 1
  text3d batch configs/dreamfusion-sd.yaml prompts.txt --address auto --gpus-per-run 1
  text3d batch --resume outputs/quickstart/batch@20260101-120000 [steps=800]

outputs:
  outputs/<name>/batch@<timestamp>/  batch.json  batch.csv  contact_sheet.png  <item>/ (a run folder each)
  The last line printed is that folder. Exit status: 0 all done, 1 some item failed, 2 bad input,
  130 interrupted (resumable).
"""


@register
class BatchVerb(Verb):
    name = "batch"
    help = "run many prompts (or override sets) as separate runs, scheduled by Ray"
    description = ("Run every item of a PROMPTS file as an ordinary run inside one batch directory, scheduled by "
                   "Ray on this machine or a cluster; failed runs are retried from their last checkpoint, and "
                   "an interrupted batch continues with --resume.")
    epilog = EPILOG
    items_metavar = "CONFIG PROMPTS [key.path=value ...]"
    items_help = "a YAML preset, the prompts file, then overrides for every item"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add = parser.add_argument
        add("--address", default=None,
            help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local instance)")
        add("--gpus-per-run", type=float, default=None, help="GPUs per run (default: 0)")
        add("--cpus-per-run", type=float, default=None, help="CPU cores per run (default: 1)")
        add("--max-retries", type=int, default=None, help="retries of a failed run from its last checkpoint (default: 2)")
        add("--resume", default=None, metavar="BATCH_DIR",
            help="continue a batch: skip finished runs, continue the others from their checkpoints")

    def schema(self) -> Any:
        from text3d.run.config import RUN_SCHEMA

        return RUN_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        """The config every item starts from (CONFIG and the command line's overrides; a resumed batch's
        own CONFIG and overrides, then the new ones)."""
        from text3d.run.config import RUN_SCHEMA

        if args.resume:
            from text3d.batch.state import load_batch

            state = load_batch(args.resume)
            return RUN_SCHEMA.load(state.config, [*state.overrides, *args.items])
        if len(args.items) < 2 or "=" in args.items[0] or "=" in args.items[1]:
            raise Text3DError("usage: text3d batch CONFIG PROMPTS [key=value ...] (or --resume BATCH_DIR)")
        return RUN_SCHEMA.load(args.items[0], list(args.items[2:]))

    def run(self, args: argparse.Namespace) -> int:
        return run_batch(args)


def run_batch(args: argparse.Namespace) -> int:
    """Start (``CONFIG PROMPTS [key=value ...]``) or resume (``--resume BATCH_DIR``) a batch.

    Returns:
        0 when every item finished, 1 when some failed, 130 after Ctrl-C (the batch is resumable).
    """
    from text3d.batch.driver import BatchInterrupted

    options = {"gpus_per_run": args.gpus_per_run, "cpus_per_run": args.cpus_per_run,
               "max_retries": args.max_retries, "address": args.address}
    _check_batch_options(options)
    bar = None if args.no_progress else _batch_bar()
    try:
        state = _start_or_resume(args, options, bar)
    except BatchInterrupted as e:
        _close(bar)
        batch_dir = str(e).rsplit("--resume ", 1)[-1]
        print(str(e), file=sys.stderr)
        print(batch_dir)
        return 130
    except KeyboardInterrupt:  # before the batch directory was complete: nothing to resume
        print("interrupted before the batch started", file=sys.stderr)
        return 130
    finally:
        _close(bar)
    counts = state.counts()
    for item in state.items:
        if item.status == "failed":  # why, in one line each (the whole error is in batch.json)
            reason = next((line.strip() for line in (item.error or "").splitlines() if line.strip()), "no reason recorded")
            print(f"failed: {item.item}: {reason[:300]}", file=sys.stderr)
    print(f"{counts['done']} done, {counts['failed']} failed of {len(state.items)}; summary: "
          f"{state.batch_dir / 'batch.csv'}", file=sys.stderr)
    print(state.batch_dir)
    return 0 if counts["failed"] == 0 else 1


def _start_or_resume(args: argparse.Namespace, options: dict, bar):
    from text3d.batch.launch import resume_batch, start_batch
    from text3d.batch.state import BatchOptions

    if args.resume:
        stray = [x for x in args.items if "=" not in x]
        if stray:
            raise Text3DError(f"--resume takes no CONFIG or PROMPTS (got {' '.join(stray)}): the batch directory "
                              "holds them; only key=value overrides for the unfinished runs (e.g. steps=800)")
        return resume_batch(args.resume, options, overrides=list(args.items), on_progress=bar)
    if len(args.items) < 2 or "=" in args.items[0] or "=" in args.items[1]:
        raise Text3DError("usage: text3d batch CONFIG PROMPTS [key=value ...] (or --resume BATCH_DIR)")
    defaults = BatchOptions()
    chosen = {k: (v if v is not None else getattr(defaults, k)) for k, v in options.items()}
    return start_batch(args.items[0], args.items[1], list(args.items[2:]), BatchOptions(**chosen), on_progress=bar)


def _check_batch_options(options: dict) -> None:
    for name in ("gpus_per_run", "cpus_per_run"):
        value = options[name]
        if value is not None and not (0 <= value <= 1024):
            raise Text3DError(f"--{name.replace('_', '-')}: must be in [0, 1024], got {value:g}")
    if options["cpus_per_run"] is not None and options["cpus_per_run"] <= 0:
        raise Text3DError("--cpus-per-run: must be > 0 (a run needs a core to drive it)")
    if options["max_retries"] is not None and not 0 <= options["max_retries"] <= 100:
        raise Text3DError(f"--max-retries: must be in [0, 100], got {options['max_retries']}")


def _batch_bar():
    """A progress callback drawing one tqdm bar over the batch's steps; the bar appears at the first
    report (so an input error never leaves a bar on the terminal)."""
    from tqdm.auto import tqdm

    bars, last = [], []

    def update(progress) -> None:
        key = (progress.steps_done, progress.steps_total, tuple(sorted(progress.counts.items())))
        if last and last[0] == key:
            return
        last[:] = [key]
        if not bars:
            bars.append(tqdm(total=progress.steps_total, desc="batch", unit="step", dynamic_ncols=True))
        bar = bars[0]
        bar.total = progress.steps_total
        bar.update(progress.steps_done - bar.n)
        c = progress.counts
        bar.set_postfix(done=c["done"], running=c["running"], failed=c["failed"], refresh=True)

    update.close = lambda: bars and bars[0].close()  # type: ignore[attr-defined]
    return update


def _close(bar) -> None:
    if bar is not None:
        bar.close()  # type: ignore[attr-defined]
