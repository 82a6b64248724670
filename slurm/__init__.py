"""Slurm launchers through submitit: `python -m slurm train|prep|sweep|status` (docs/slurm.md).

    options.py     the [slurm] launcher flags and defaults, one table for `train` and `prep`
    launch.py      [slurm] config section -> submitit SlurmExecutor / sbatch script
    train_task.py  what every task runs: rendezvous, pretrain.train.main, requeue on EXIT_PREEMPTED
    train_cli.py   python -m slurm train
    prep.py        python -m slurm prep (data_prep tasks as a job array + finalize job)
    status.py      python -m slurm status
    jobs.py        job records in runs/NAME/slurm/jobs.jsonl
    accounting.py  what Slurm says about a job (scontrol, sacct); below jobs, status and train_task
    local/         a one-node Slurm cluster for tests and CI (start.sh, stop.sh)

`python -m slurm sweep` is the `sweeps` package (grid format, local runner, the grid as one job array),
which sits above slurm and eval; slurm imports only pretrain, data_prep and stackcore.
"""
