"""The Slurm launchers against a real one-node Slurm cluster (slurm/local/start.sh; `make test` starts it
and sets MIXERSTACK_SLURM=1). Tiny configs, few steps: the whole file runs in a few minutes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import shared_dir

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not os.environ.get("MIXERSTACK_SLURM"),
                       reason=os.environ.get("MIXERSTACK_SLURM_SKIP") or
                       "no local Slurm cluster: run `bash slurm/local/start.sh` (root, Debian) and set "
                       "MIXERSTACK_SLURM=1, or use `make test`, which does both"),
]

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DATA = shared_dir() / "data"
TOKENIZER = DATA / "tokenizers" / "r50k_base.tiktoken"
CORPORA = [DATA / "tinystories" / "train-head.jsonl", DATA / "enwiki" / "enwiki-sample.parquet",
           DATA / "tinystories" / "valid-head.txt"]
STEPS = 24


def run(cmd: list[str], timeout: float = 300, check: bool = True, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} -> {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm")


@pytest.fixture(scope="module")
def corpus(work) -> Path:
    out = work / "corpus"
    run([PY, "-m", "data_prep", "tokenize", "--input", CORPORA[0], "--tokenizer", TOKENIZER, "--out", out,
         "--workers", "1", "--val-fraction", "0.05"])
    return out


def write_config(work: Path, corpus: Path, name: str, **sections: dict) -> Path:
    """A tiny 2-rank CPU run: mixer d64 x 2 layers at n_ctx 32; `sections` override/extend it."""
    table = {
        "run": {"name": name, "dir": str(work / "runs"), "seed": 3},
        "model": {"family": "mixer", "d_model": 64, "n_layers": 2, "n_ctx": 32, "vocab_size": 50257},
        # streams fixed: the same global batches at any world size (a 1-rank run matches a 2-rank one)
        "data": {"path": str(corpus), "val_tokens": 2048, "shuffle_buffer": 16, "streams": 2},
        "train": {"steps": STEPS, "micro_batch": 2, "global_batch": 4, "warmup": 2, "device": "cpu", "lr": 1e-3},
        "checkpoint": {"every": 0},
        "log": {"every": 1, "eval_every": 0},
        "slurm": {"tasks_per_node": 2, "time": "00:10:00", "signal_lead_s": 30, "max_requeues": 5},
    }
    for section, values in sections.items():
        table.setdefault(section, {}).update(values)
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def losses(run_dir: Path) -> dict[int, float]:
    from stackcore import rundir

    return {r["step"]: r["train_loss"] for r in rundir.read_metrics(run_dir) if r.get("train_loss") is not None}


def assert_same_losses(a: dict[int, float], b: dict[int, float]) -> None:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    assert len(a) == STEPS, f"expected {STEPS} logged steps, got {sorted(a)}"
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), f"step {step}: {a[step]} != {b[step]}"


@pytest.fixture(scope="module")
def reference(work, corpus) -> dict[int, float]:
    """The same config trained locally with 2 ranks (two processes, env:// rendezvous), uninterrupted."""
    from pretrain.distributed import free_port

    cfg = write_config(work, corpus, "local-ref")
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([PY, "-m", "pretrain.train", "--config", str(cfg)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got = losses(work / "runs" / "local-ref")
    assert len(got) == STEPS
    return got


def submit(cfg: Path, *extra: str):
    """Submit through the launcher's function (the CLI's code path) and return (job, run_dir)."""
    from slurm import train_cli

    _, train_argv, resolved = train_cli.resolve(["--config", str(cfg), *extra])
    return train_cli.submit(train_argv, resolved), train_cli.run_dir_of(resolved)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sacct_state(job_id: str, final: bool = True) -> str:
    """The job's state in Slurm's accounting; with `final`, waits (up to 60 s) until it has ended:
    submitit returns the result as soon as the tasks have written it, before the job is closed."""
    def state() -> str:
        out = run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id]).stdout.split()
        return out[0] if out else ""
    if final:
        wait_for(lambda: state() not in ("", "RUNNING", "PENDING", "COMPLETING", "REQUEUED"), 60,
                 f"job {job_id} to end")
    return state()


def test_start_script_is_idempotent():
    done = run(["bash", REPO / "slurm/local/start.sh"])
    assert "cluster mixerstack up" in done.stdout
    assert "starting" not in done.stdout, "an already running cluster was restarted:\n" + done.stdout
    assert run(["sinfo", "-h", "-o", "%t"]).stdout.split()[0] in ("idle", "mix", "alloc")


def test_dry_run_is_a_valid_sbatch_script(work, corpus):
    cfg = write_config(work, corpus, "dry")
    out = run([PY, "-m", "slurm", "train", "--config", cfg, "--time", "00:05:00", "--partition", "debug",
               "--dry-run"]).stdout
    assert "#SBATCH --ntasks-per-node=2" in out and "#SBATCH --signal=USR1@30" in out and "#SBATCH --time=5" in out
    script = work / "dry.sh"
    script.write_text(out)
    gpu = run([PY, "-m", "slurm", "train", "--config", cfg, "--nodes", "2", "--gpus-per-node", "4", "--account", "acc",
               "--qos", "high", "--constraint", "h100", "--mem", "200G", "--cpus-per-task", "8", "--dry-run"]).stdout
    extra = run([PY, "-m", "slurm", "train", "--config", cfg, "--slurm.setup", '["export MIXER_SETUP=1"]',
                 "--slurm.sbatch", '{exclusive = "", comment = "mixer run"}', "--dry-run"]).stdout
    assert "#SBATCH --exclusive\n" in extra and "#SBATCH --comment='mixer run'" in extra
    assert extra.index("export MIXER_SETUP=1") < extra.index("srun ")
    script.write_text(extra)
    assert run(["sbatch", "--test-only", script], check=False).returncode == 0
    refused = run([PY, "-m", "slurm", "train", "--config", cfg, "--partition", "nosuch"], check=False)
    assert refused.returncode == 2 and "sbatch refused the job" in refused.stderr and "nosuch" in refused.stderr
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--account=acc", "--qos=high",
                 "--constraint=h100", "--mem=200G", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in gpu, (line, gpu)
    test = run(["sbatch", "--test-only", script], check=False)
    assert test.returncode == 0 and "to start at" in test.stderr, test.stderr
    grid = REPO / "configs" / "sweeps" / "ctx-pairs-tiny.toml"
    sweep_out = run([PY, "-m", "slurm", "sweep", "--grid", grid, "--dry-run"]).stdout
    assert "#SBATCH --array=0-11%2" in sweep_out
    script.write_text(sweep_out[sweep_out.index("#!/bin/bash"):])
    assert run(["sbatch", "--test-only", script], check=False).returncode == 0


def test_train_two_ranks_matches_local_run(work, corpus, reference):
    cfg = write_config(work, corpus, "slurm-plain")
    done = run([PY, "-m", "slurm", "train", "--config", cfg, "--wait"], timeout=300)
    run_dir = work / "runs" / "slurm-plain"
    assert "completed after 0 requeue(s)" in done.stdout
    assert_same_losses(losses(run_dir), reference)
    assert list((run_dir / "tb").glob("events.out.tfevents.*")), "no tensorboard events"
    assert any((run_dir / "checkpoints").iterdir()), "no checkpoint"
    from slurm import jobs
    events = [e["event"] for e in jobs.read(run_dir)]
    assert events == ["submitted", "started", "completed"], events
    assert list((run_dir / "slurm").glob("*_0_log.out")) and list((run_dir / "slurm").glob("*_1_log.out"))
    assert sacct_state(jobs.job_ids(run_dir)[0]) == "COMPLETED"


def test_scontrol_requeue_checkpoints_and_resumes_exactly(work, corpus, reference):
    cfg = write_config(work, corpus, "slurm-requeue", train={"debug_step_sleep_s": 0.4})
    job, run_dir = submit(cfg)
    twice = run([PY, "-m", "slurm", "train", "--config", cfg], check=False)  # a second trainer for one run
    assert twice.returncode == 2 and f"already being trained by Slurm job {job.job_id}" in twice.stderr, twice.stderr
    wait_for(lambda: len(losses(run_dir)) >= 6, 120, "6 logged steps")
    run(["scontrol", "requeue", job.job_id])
    job.results()  # raises if any rank failed
    from slurm import jobs, status
    assert jobs.requeue_count(run_dir) == 1
    assert [e.get("restart") for e in jobs.read(run_dir) if e["event"] == "started"] == [0, 1]
    assert_same_losses(losses(run_dir), reference)
    row = status.status(run_dir)[0]
    assert (row["state"], row["requeues"], row["step"]) == ("COMPLETED", 1, STEPS)
    # One tensorboard run: after the resume each step appears once, with the metrics.jsonl value.
    from tensorboard.backend.event_processing import event_accumulator
    tb = event_accumulator.EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    tb.Reload()
    scalars = {e.step: e.value for e in tb.Scalars("train/train_loss")}
    assert sorted(scalars) == sorted(reference)
    assert all(scalars[k] == pytest.approx(v, rel=1e-5) for k, v in losses(run_dir).items())
    out = run([PY, "-m", "slurm", "status", run_dir]).stdout
    assert "COMPLETED" in out and out.split()[-1] == "1"


@pytest.mark.parametrize("case,expect", [("bad-input", "no-such-corpus"), ("non-finite", "non-finite")])
def test_failing_job_surfaces_its_traceback_and_is_not_requeued(work, corpus, case, expect):
    if case == "bad-input":
        sections = {"data": {"path": str(work / "no-such-corpus")}}
    else:  # a learning rate that blows the loss up within a few steps
        sections = {"train": {"lr": 1e12, "grad_clip": 0.0, "max_nonfinite": 2}}
    cfg = write_config(work, corpus, f"slurm-fail-{case}", slurm={"tasks_per_node": 1}, **sections)
    done = run([PY, "-m", "slurm", "train", "--config", cfg, "--wait"], check=False, timeout=300)
    run_dir = work / "runs" / f"slurm-fail-{case}"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" in done.stderr and expect in done.stderr, done.stderr
    assert expect in (run_dir / "slurm" / "failure.txt").read_text()
    from slurm import jobs
    assert jobs.requeue_count(run_dir) == 0
    assert [e["event"] for e in jobs.read(run_dir)] == ["submitted", "started", "failed"]
    assert sacct_state(jobs.job_ids(run_dir)[0]) == "FAILED"


@pytest.fixture(scope="module", autouse=True)
def time_limit_job(work, corpus):
    """Queued when the module starts and checked by the last tests: it mostly sleeps through its time
    limits and requeues, so it runs beside the other tests instead of adding ~100 s after them.
    A 2-minute limit, warning 60 s ahead, for a run that needs more than one allocation (24 steps of
    >= 2.5 s). Slurm checks limits on a 30 s tick and may warn up to 30 s early, so the signal lands
    30-60 s into each allocation; the run only finishes through requeues. One rank keeps startup short."""
    cfg = write_config(work, corpus, "slurm-timelimit", train={"debug_step_sleep_s": 2.5},
                       slurm={"time": "00:02:00", "signal_lead_s": 60, "tasks_per_node": 1, "max_requeues": 12})
    job, run_dir = submit(cfg)
    yield job, run_dir
    if not job.done():
        job.cancel(check=False)


def submit_entry(work: Path, name: str, entry_source: str, steps: int, then: str) -> subprocess.CompletedProcess:
    """Submit a 2-rank job whose ranks run `entry_source`'s main (in place of the trainer) for run
    `work/runs/NAME`, then run the Python lines `then` (with `job` and `time` in scope) in the same process."""
    mod = work / f"{name}mod"
    mod.mkdir()
    (mod / f"{name}_entry.py").write_text(entry_source)
    run_dir = work / "runs" / name
    script = f"""
import time
from pretrain.config import SlurmSection
from slurm import launch
from slurm.train_task import TrainTask
ex = launch.make_executor(SlurmSection(tasks_per_node=2, time="00:15:00", signal_lead_s=30), "{run_dir}/slurm", "{name}")
job = ex.submit(TrainTask([], "{run_dir}", {steps}, entry="{name}_entry:main", preempted_code=3))
""" + then
    return run([PY, "-c", script], timeout=240, env={**os.environ, "PYTHONPATH": str(mod)})


CRASHING_ENTRY = '''
import os, time
def main(argv):
    if os.environ["RANK"] == "1":
        time.sleep(2)
        raise ValueError("rank 1 broke on purpose")
    time.sleep(3600)  # rank 0 stands for a rank blocked in a collective waiting for rank 1
    return 0
'''


def test_one_rank_crashing_ends_the_job_at_once(work):
    # srun --kill-on-bad-exit: the other rank is stopped, not left waiting (here an hour) for the dead one.
    # No timing assertion: if rank 0 were left running, the launcher's wait would outlive `run`'s timeout.
    run_dir = work / "runs" / "crash"
    done = submit_entry(work, "crash", CRASHING_ENTRY, steps=0, then=f"""
from pathlib import Path
from slurm.train_cli import wait
t0 = time.time()
rc = wait(job, Path("{run_dir}"))  # the launcher's own wait (python -m slurm train --wait)
print("rc", rc, "after", round(time.time() - t0), "s")
""")
    assert "rc 1 after" in done.stdout, done.stdout + done.stderr
    assert "rank 1 broke on purpose" in done.stderr, done.stderr
    failure = (run_dir / "slurm" / "failure.txt").read_text()
    assert "rank 1" in failure and "ValueError" in failure
    from slurm import jobs
    assert sacct_state(jobs.job_ids(run_dir)[0]) == "FAILED"


STOPPABLE_ENTRY = '''
import signal, time
def main(argv):  # behaves like the trainer on a signal: "checkpoint", then EXIT_PREEMPTED
    got = []
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda s, f: got.append(s))
    for _ in range(2400):
        if got:
            return 3
        time.sleep(0.05)
    return 0
'''


def test_scancel_is_final_even_though_the_trainer_checkpoints(work):
    # scancel sends SIGTERM like a preemption, and Slurm would requeue even a cancelled job if asked:
    # the task must tell the two apart (accounting says CANCELLED) and leave the job cancelled.
    run_dir = work / "runs" / "cancel"
    done = submit_entry(work, "cancel", STOPPABLE_ENTRY, steps=5, then=f"""
import subprocess
from slurm import jobs
while not jobs.read("{run_dir}"):
    time.sleep(0.2)
time.sleep(2)
subprocess.run(["scancel", job.job_id], check=True)
time.sleep(15)  # longer than a requeue would take to bring the job back (cred_expire=10)
print("JOB", job.job_id)
""")
    job_id = done.stdout.split("JOB")[1].split()[0]
    from slurm import jobs, status
    events = [e["event"] for e in jobs.read(run_dir)]
    assert events == ["started", "cancelled"], events
    assert sacct_state(job_id) == "CANCELLED"
    assert status.status(run_dir)[0]["state"] == "CANCELLED"


def test_prep_array_equals_local_tokenize_and_reruns_skip_done_tasks(work):
    common = ["--input", *CORPORA, "--tokenizer", TOKENIZER, "--val-fraction", "0.02", "--task-mb", "1"]
    local, array = work / "prep-local", work / "prep-array"
    run([PY, "-m", "data_prep", "tokenize", *common, "--out", local, "--workers", "1"])
    run([PY, "-m", "slurm", "prep", "--array", "2", *common, "--out", array, "--wait"])
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (local, array))
    for m in (a, b):
        m.pop("timings", None)
    assert a == b
    for shard in a["shards"]:
        assert (local / shard["name"]).read_bytes() == (array / shard["name"]).read_bytes()
    # Lose one task (marker + shards): a rerun queues just that task and rewrites the same manifest.
    (array / "manifest.json").unlink()
    (array / "tasks" / "00001.json").unlink()
    for shard in array.glob("*-00001-*.tar"):
        shard.unlink()
    out = run([PY, "-m", "slurm", "prep", "--array", "2", *common, "--out", array, "--wait"]).stdout
    assert "prep: 1 array elements" in out
    again = json.loads((array / "manifest.json").read_text())
    again.pop("timings", None)
    assert again == a
    assert "already done" in run([PY, "-m", "slurm", "prep", "--array", "2", *common, "--out", array]).stdout


def test_sweep_array_and_status(work, corpus):
    base = write_config(work, corpus, "sweep-base", train={"steps": 4}, slurm={"tasks_per_node": 1})
    grid = work / "grid.toml"
    grid.write_text(f'[sweep]\nname = "mini"\nbase = "{base}"\ndir = "{work / "sweep"}"\nmax_parallel = 2\n'
                    '[axes]\n"run.seed" = [0, 1]\n[variants.mixer]\n[variants.llama]\n"model.family" = "llama"\n'
                    '"model.heads" = 2\n')
    done = run([PY, "-m", "slurm", "sweep", "--grid", grid, "--wait"], timeout=400)
    assert "4 completed, 0 failed" in done.stdout
    for run_dir in (work / "sweep").glob("*-seed*"):  # each run holds links to its own task logs
        assert [p for p in (run_dir / "slurm").glob("*_0_log.out") if p.is_symlink() and p.read_text()], run_dir
    out = run([PY, "-m", "slurm", "status", work / "sweep"]).stdout.splitlines()
    assert len(out) == 5 and all(" COMPLETED " in line and " 4 " in line for line in out[1:]), out
    again = run([PY, "-m", "slurm", "sweep", "--grid", grid]).stdout
    assert "nothing submitted" in again


def test_time_limit_finishes_through_requeues(time_limit_job, reference):
    job, run_dir = time_limit_job
    job.results()
    from slurm import jobs
    assert jobs.requeue_count(run_dir) >= 1
    assert_same_losses(losses(run_dir), reference)  # no lost or repeated steps
    assert sacct_state(job.job_id) == "COMPLETED"
