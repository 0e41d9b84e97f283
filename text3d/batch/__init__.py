"""``text3d batch``: many runs (prompts, seeds, configs) scheduled by Ray, fault-tolerant and resumable.

Each item of a PROMPTS file becomes an ordinary run folder inside one batch directory; Ray runs
each attempt in its own worker process with the CPUs/GPUs asked for; a failed attempt continues
from the run's last checkpoint; ``batch.json`` / ``batch.csv`` / ``contact_sheet.png`` summarise.

Modules: :mod:`.items` (the PROMPTS file), :mod:`.state` (the batch directory), :mod:`.summary`
(summary files), :mod:`.engine` (Ray), :mod:`.worker` (one run in a worker), :mod:`.progress`
(progress reports), :mod:`.driver` (scheduling, retries, Ctrl-C), :mod:`.launch` (start / resume),
:mod:`.command` (the CLI verb). Submodules are imported where used, so ``text3d --help`` stays quick.

May import: everything below the CLI (``core`` ... ``run``); ``ray`` only inside :mod:`.engine`.
"""
