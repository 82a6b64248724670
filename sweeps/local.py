"""Running a sweep grid without Slurm: one run after another in this process (`python -m slurm sweep
--local`, `python -m sweeps --local`). Finished runs are skipped, an interrupted one resumes from its
checkpoint (the trainer's `checkpoint.resume = auto`)."""
from __future__ import annotations

from pathlib import Path

from sweeps.grid import expand, is_finished, load_grid


def run_local(grid_path: str | Path, only: list[str] | None = None) -> dict[str, int]:
    """Every unfinished run of the grid (or those named in `only`) through pretrain.train.main.
    Returns {run name: exit code}."""
    grid = load_grid(grid_path)  # a bad grid fails before torch is imported
    from pretrain.train import main as train_main

    codes: dict[str, int] = {}
    for name, argv in expand(grid_path):
        if only and name not in only:
            continue
        if is_finished(grid.dir / name):
            codes[name] = 0
            continue
        print(f"[sweep {grid.name}] {name}: python -m pretrain.train {' '.join(argv)}", flush=True)
        codes[name] = int(train_main(list(argv)) or 0)
    return codes
