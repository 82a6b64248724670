"""Running many tasks on one machine: up to N worker processes, one process per task; a tqdm bar shows
documents/s, tokens/s and MB/s from counters the workers update while they work (not only at task ends).

One process per task, each with its own result pipe, and progress through lock-free shared counters:
nothing is shared between workers that a killed worker (OOM killer, SIGKILL) could leave locked or
half-written. A ProcessPoolExecutor or a multiprocessing.Queue can hang when a worker dies at the wrong
moment (seen in our tests); here a dead worker is just an exit code, reported with the unfinished tasks.
Tasks are large (hundreds of MB of text), so a process start per task costs nothing worth measuring.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path

from tqdm import tqdm

from data_prep.tasks import PrepError, pending_tasks, remove_leftovers, run_task


def _child(conn, counters, out_dir: str, index: int, slot: int) -> None:
    """Body of one worker process: run a task, send ("ok", record) or ("error", exception)."""
    done = [0, 0, 0]

    def send(docs: int, tokens: int, nbytes: int) -> None:  # only this task's slot: no lock needed
        done[0], done[1], done[2] = done[0] + docs, done[1] + tokens, done[2] + nbytes
        counters[3 * slot:3 * slot + 3] = done

    try:
        conn.send(("ok", run_task(out_dir, index, progress=send)))
    except Exception as exc:  # our errors name the file; name the task too
        try:
            conn.send(("error", type(exc)(f"task {index}: {exc}")))
        except Exception:  # an exception type that will not rebuild or pickle
            conn.send(("error", PrepError(f"task {index}: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="task", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                        desc="tokenize")
        self.docs = self.tokens = self.nbytes = 0
        self.start = self.shown = time.perf_counter()

    def add(self, docs: int, tokens: int, nbytes: int) -> None:
        self.set(self.docs + docs, self.tokens + tokens, self.nbytes + nbytes)

    def set(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs, self.tokens, self.nbytes = docs, tokens, nbytes
        now = time.perf_counter()
        if now - self.shown < 0.5:  # redraw twice a second at most
            return
        self.shown, dt = now, max(now - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.docs / dt:,.0f} docs/s {self.tokens / dt:,.0f} tok/s "
                                 f"{self.nbytes / dt / 1e6:.1f} MB/s")


def run_tasks(out_dir: str | Path, indices: list[int], workers: int, show_progress: bool = True) -> list[dict]:
    """Run the given tasks (any order, any worker count: the shards do not depend on it)."""
    out_dir = str(out_dir)
    bar = _Progress(len(indices), show_progress)
    pending = set(pending_tasks(out_dir)) & set(indices)
    results: list[dict] = []
    try:
        if workers <= 1 or len(indices) <= 1:
            remove_leftovers(out_dir, pending)  # one directory scan for all the tasks of this process
            for index in indices:
                results.append(run_task(out_dir, index, progress=bar.add, leftovers_removed=True))
                bar.bar.update(1)
            return results
        _run_in_processes(out_dir, indices, workers, bar, results)
        return results
    finally:
        bar.bar.close()


def _run_in_processes(out_dir: str, indices: list[int], workers: int, bar: _Progress, results: list[dict]) -> None:
    ctx = mp.get_context("spawn")  # workers start clean: no inherited threads or tokenizer state
    counters = ctx.RawArray("q", 3 * len(indices))
    todo = list(enumerate(indices))[::-1]
    running: dict = {}  # receiving end of a worker's pipe -> (process, task index)
    try:
        while todo or running:
            while todo and len(running) < workers:
                slot, index = todo.pop()
                recv_end, send_end = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send_end, counters, out_dir, index, slot), daemon=True)
                proc.start()
                send_end.close()  # the child holds the only writer: EOF when it exits
                running[recv_end] = (proc, index)
            for conn in wait(list(running), timeout=0.5):
                proc, index = running.pop(conn)
                try:
                    kind, payload = conn.recv()
                except EOFError:  # exited without a word: killed
                    proc.join()
                    unfinished = [i for i in pending_tasks(out_dir) if i in indices]
                    raise PrepError(f"a worker process died (exit code {proc.exitcode}: killed? out of memory?) "
                                    f"on task {index}; {len(unfinished)} tasks unfinished ({unfinished[:20]}); "
                                    "rerun with --resume") from None
                proc.join()
                if kind == "error":
                    raise payload
                results.append(payload)
                bar.bar.update(1)
            bar.set(*(sum(counters[k::3]) for k in range(3)))
    finally:  # on any error, stop the others at once; their partial output is temp files, redone on --resume
        for proc, _ in running.values():
            proc.kill()
            proc.join()
