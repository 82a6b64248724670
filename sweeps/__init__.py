"""Sweep grids: one TOML file -> named training runs, run here or as one Slurm job array (docs/slurm.md).

    grid.py         the grid format: load_grid, expand(grid) -> [(name, argv)], is_finished
    local.py        run_local(grid): the runs one after another in this process (no Slurm)
    slurm_array.py  the runs as one Slurm job array (plan, submit, wait_all)
    cli.py          python -m slurm sweep (= python -m sweeps)

This layer sits above both `slurm` (launching) and `eval` (the matched-compute planner a grid's
[match] section uses), so neither of those imports the other.
"""
