"""`segcli batch`: many videos on one machine or a Ray cluster, resumable, nothing lost.

    from segcli.batch import BatchOptions, run_batch
    result = run_batch(BatchOptions("vis", ["clips/"], "out/", weights="omg-seg-convl", workers=2))
    result.exit_code        # 0: every video ok; 11 (EXIT_SOME_FAILED): some failed (see the manifest)

The unit of work is one video (its frames in order on one worker) or a chunk of images. Each
worker loads the model once and runs video after video through segcli.api.VideoJob; each video's
files appear atomically in OUT/<name>/, and OUT/manifest.jsonl gets one line per finished video.
A rerun skips what is done (and, unless --retry-failed, what failed), recovers videos whose line
a killed driver never wrote, and rebuilds the dataset-level results (OUT/results.json, ...).

Modules: items (inputs -> work items), prompts (vos prompts per video), state (OUT/: lock,
manifest, markers), worker (the unit of work), local (process pool), ray_engine (Ray actors),
merge (dataset-level results), progress (stderr), driver (all of it in order).
"""

from __future__ import annotations

from .driver import EXIT_SOME_FAILED, BatchFailedError, BatchOptions, BatchResult, run_batch

__all__ = ["BatchOptions", "BatchResult", "BatchFailedError", "EXIT_SOME_FAILED", "run_batch"]
