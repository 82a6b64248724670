"""Slurm launchers through submitit: `python -m slurm train|prep|sweep|status` (docs/slurm.md).

    launch.py      [slurm] config section -> submitit SlurmExecutor / sbatch script
    train_task.py  what every task runs: rendezvous, pretrain.train.main, requeue on EXIT_PREEMPTED
    train_cli.py   python -m slurm train
    prep.py        python -m slurm prep (data_prep tasks as a job array + finalize job)
    sweep.py       grid format: expand(grid) -> [(name, argv)], run_local(grid)
    sweep_cli.py   python -m slurm sweep (a grid as one job array)
    status.py      python -m slurm status
    jobs.py        job records in runs/NAME/slurm/jobs.jsonl
    local/         a one-node Slurm cluster for tests and CI (start.sh, stop.sh)
"""
