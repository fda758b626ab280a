"""`segcli bench`: speed, memory and accuracy of the pipeline on this machine (segcli.bench).

Mounted by segcli.cli as a single command:  app.command("bench")(bench_cmd.bench)
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def bench(
    weights: Annotated[Optional[list[str]], typer.Option(
        "--weights", "-w", help="'convl' (released ConvNeXt-L architecture, random weights; the default), "
        "a model folder or a registry name; repeatable")] = None,
    size: Annotated[str, typer.Option(help="resize limits WxH or a preset (official, fast, small, tiny)")]
    = "1280x736",
    frames: Annotated[int, typer.Option(help="frames of the synthetic test video (3 = one clip)")] = 3,
    tasks: Annotated[str, typer.Option(help="comma-separated: vis, vps, vos")] = "vis,vps,vos",
    variants: Annotated[Optional[str], typer.Option(help="comma-separated: fp32-eager (the plain reference, "
                                                    "always run), fp32-sync, fp32, bf16-nchw, bf16-sync, bf16, "
                                                    "bf16-compile, fp16, fp16-compile (default: fp32,bf16 on "
                                                    "CPU; fp32,fp16,bf16 on CUDA)")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's choice)")] = None,
    warmup: Annotated[bool, typer.Option("--warmup", help="one untimed clip first in every run")] = False,
    repeat: Annotated[int, typer.Option(min=1, help="runs per task and variant, interleaved; the table shows "
                                        "the fastest (--repeat 2 for a robust speed-up on a shared machine)")] = 1,
    json_out: Annotated[Optional[str], typer.Option("--json", help="also write every number to this file")]
    = None,
    keep: Annotated[Optional[str], typer.Option(help="keep the test video and outputs in this folder")] = None,
    no_floors: Annotated[bool, typer.Option("--no-floors", help="skip the matrix-multiply peak and the per-stage "
                                            "MAC floors")] = False,
) -> None:
    """Benchmark: per-stage time, frames/s, peak memory and accuracy of the fast paths vs fp32.

    Each (model, task, variant) runs end to end in its own process on a generated video;
    the tables go to stdout. Downloads nothing.

    Examples:

      segcli bench

      segcli bench --weights ./my_model_folder --size tiny --frames 12

      segcli bench --variants fp32-eager,bf16,bf16-compile --tasks vis

      segcli bench --tasks vis --repeat 2
    """
    from .. import bench as impl

    opts = impl.BenchOptions(weights=weights or ["convl"], size=size, frames=frames,
                             tasks=[t for t in tasks.split(",") if t],
                             variants=variants.split(",") if variants else None, device=device, threads=threads,
                             warmup=warmup, repeat=repeat, json_out=json_out, keep=keep, no_floors=no_floors)
    for t in opts.tasks:
        if t not in impl.TASKS:
            raise typer.BadParameter(f"unknown task {t!r} (choose {', '.join(impl.TASKS)})", param_hint="--tasks")
    results = impl.run(opts)
    if not all("fps" in r for r in results):
        raise typer.Exit(1)
