"""The ``text3d batch`` command (its parser is ``_add_batch_parser`` in :mod:`text3d.cli`): options
checked, the batch started or resumed, one progress bar over the whole batch, the batch
directory printed last.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import Text3DError


def cmd_batch(args: argparse.Namespace) -> int:
    """Start (``CONFIG PROMPTS [key=value ...]``) or resume (``--resume BATCH_DIR``) a batch.

    Returns:
        0 when every item finished, 1 when some failed, 130 after Ctrl-C (the batch is resumable).
    """
    from .driver import BatchInterrupted

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
    print(f"{counts['done']} done, {counts['failed']} failed of {len(state.items)}; summary: "
          f"{state.batch_dir / 'batch.csv'}", file=sys.stderr)
    print(state.batch_dir)
    return 0 if counts["failed"] == 0 else 1


def _start_or_resume(args: argparse.Namespace, options: dict, bar):
    from .launch import resume_batch, start_batch
    from .state import BatchOptions

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
