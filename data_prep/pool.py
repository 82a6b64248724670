"""Running many tasks on one machine: a process pool pulls task indices; a tqdm bar shows documents/s,
tokens/s and MB/s from progress messages the workers send while they work (not only at task ends).
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from data_prep.tasks import PrepError, pending_tasks, run_task

_progress_queue = None


def _init_worker(progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def _send(docs: int, tokens: int, nbytes: int) -> None:
    _progress_queue.put((docs, tokens, nbytes))


def _work(args: tuple[str, int]) -> dict:
    out_dir, index = args
    try:
        return run_task(out_dir, index, progress=_send)
    except ValueError as exc:  # our errors: re-raise with the task named (the message names the file)
        try:
            renamed = type(exc)(f"task {index}: {exc}")
        except TypeError:  # an exception type with another constructor: keep it as it is
            raise exc from None
        raise renamed from None


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop at once on an error: queued tasks are cancelled and running ones killed (their partial output
    is temp files, removed when the task is run again)."""
    executor.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(executor, "_processes", None) or {}).values()):  # no public way to kill
        process.terminate()


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="task", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                        desc="tokenize")
        self.docs = self.tokens = self.nbytes = 0
        self.start = self.shown = time.perf_counter()

    def add(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs, self.tokens, self.nbytes = self.docs + docs, self.tokens + tokens, self.nbytes + nbytes
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
    results = []
    try:
        if workers <= 1 or len(indices) <= 1:
            for index in indices:
                results.append(run_task(out_dir, index, progress=bar.add))
                bar.bar.update(1)
            return results
        # spawn, not fork: workers start clean (no inherited threads or tokenizer state). A
        # ProcessPoolExecutor, not multiprocessing.Pool: a worker killed by the OOM killer breaks the pool
        # (an error naming the tasks) instead of leaving its task pending forever.
        ctx = mp.get_context("spawn")
        progress_queue = ctx.Queue()
        executor = ProcessPoolExecutor(min(workers, len(indices)), mp_context=ctx, initializer=_init_worker,
                                       initargs=(progress_queue,))
        try:
            futures = {executor.submit(_work, (out_dir, i)): i for i in indices}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        results.append(future.result())
                    except BrokenProcessPool:
                        unfinished = [i for i in pending_tasks(out_dir) if i in futures.values()]
                        raise PrepError(f"a worker process died (killed? out of memory?); {len(unfinished)} "
                                        f"tasks unfinished ({unfinished[:20]}); rerun with --resume") from None
                    bar.bar.update(1)
                while True:
                    try:
                        bar.add(*progress_queue.get_nowait())
                    except queue.Empty:
                        break
        except BaseException:
            _stop(executor)
            raise
        executor.shutdown(wait=True)
        return results
    finally:
        bar.bar.close()
