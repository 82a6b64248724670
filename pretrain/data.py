"""Streaming loader over a data_prep manifest: deterministic, disjoint per rank/worker, exactly resumable.

Design (why it is shaped like this):
- The training stream is cut into `S` independent *streams*. Stream s reads, in every epoch, the train
  shards in a seeded order and keeps the webdataset samples whose running index is s mod S (so the
  streams decode disjoint parts of the corpus). Each stream packs (or cuts per document) into sequences,
  passes them through its own seeded shuffle buffer and emits whole micro-batches.
- Micro-batch j of the run (counting across ranks and accumulation steps) comes from stream j mod S.
  Rank r of W owns streams r, r+W, ...; so with the same S a run sees the same global batches at any
  world size (1-rank and 2-rank runs give equal losses), and no rank waits on another: every stream is
  infinite (it wraps epochs), so uneven shard counts never starve a rank.
- A stream's position is an explicit, small state (epoch, shard cursor, sample offset, carry tokens,
  shuffle buffer, RNG state) that travels with every micro-batch out of the DataLoader workers; the
  loader keeps the state of the last micro-batch *consumed*, which is what a checkpoint stores.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from data_prep.format import (FormatError, check_shard_file, check_shard_sizes, decode_sample, read_manifest,
                               shard_paths, shard_repair_hint)
from pretrain.lifeline import die_with_parent

IGNORE = -100


@dataclass(frozen=True)
class StreamSpec:
    """Everything a stream needs besides its state (picklable for DataLoader workers)."""
    shards: tuple[str, ...]
    stream: int
    n_streams: int
    seed: int
    n_ctx: int
    mode: str  # "packed" | "document"
    pad_side: str  # "left" | "right"
    eos: int
    dtype: str
    shuffle_buffer: int
    micro_batch: int
    shard_bytes: tuple[int | None, ...]  # the manifest's sizes, checked again whenever a shard is opened
    shard_tasks: tuple[int, ...]  # the prep task of each shard (named in the repair hint)


def check_manifest(prep_dir: str | Path, model_cfg, data_cfg) -> dict[str, Any]:
    """The manifest of `prep_dir`, refused (clear error) when tokenizer or vocabulary do not fit the model
    or a shard is missing or not the size the manifest records (before any training on it)."""
    if not data_cfg.path:
        raise FormatError("data.path is empty: set it to a data_prep output directory "
                          "(--data.path DIR, made by `python -m data_prep tokenize ... --out DIR`)")
    manifest = read_manifest(prep_dir)
    where = Path(prep_dir) / "manifest.json"
    if data_cfg.tokenizer and manifest["tokenizer"] != data_cfg.tokenizer:
        raise FormatError(f"{where}: tokenized with {manifest['tokenizer']!r} but the run expects "
                          f"data.tokenizer={data_cfg.tokenizer!r}; re-prep the data or fix data.tokenizer")
    if int(manifest["vocab_size"]) > model_cfg.vocab_size or int(manifest["eos_id"]) >= model_cfg.vocab_size:
        raise FormatError(f"{where}: tokenizer {manifest['tokenizer']!r} has {manifest['vocab_size']} tokens "
                          f"(eos {manifest['eos_id']}) but model.vocab_size={model_cfg.vocab_size}; use the "
                          "model config of this tokenizer or re-prep the data with the model's tokenizer")
    check_shard_sizes(prep_dir, manifest)
    return manifest


def new_state(spec: StreamSpec) -> dict[str, Any]:
    rng = np.random.default_rng([spec.seed, 7919, spec.stream])
    return {"epoch": 0, "cursor": 0, "offset": 0, "counter": 0, "kept_in_epoch": 0,
            "carry": np.zeros(0, np.int64), "pending_tokens": np.zeros(0, np.int64),
            "pending_lengths": np.zeros(0, np.int64),
            "buffer": np.zeros((0, 2, spec.n_ctx), np.int64), "rng": rng.bit_generator.state}


class Stream:
    """One infinite, resumable sequence source (see module docstring)."""

    def __init__(self, spec: StreamSpec, state: dict[str, Any] | None = None):
        self.spec = spec
        st = state or new_state(spec)
        self.epoch, self.cursor, self.offset = int(st["epoch"]), int(st["cursor"]), int(st["offset"])
        self.counter, self.kept_in_epoch = int(st["counter"]), int(st["kept_in_epoch"])
        self.carry = np.asarray(st["carry"], np.int64)
        self.pending = list(np.split(np.asarray(st["pending_tokens"], np.int64),
                                     np.cumsum(st["pending_lengths"])[:-1])) if len(st["pending_lengths"]) else []
        self.buffer = [b for b in np.asarray(st["buffer"], np.int64)]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = st["rng"]
        self._samples: Iterator | None = None

    def state(self) -> dict[str, Any]:
        lengths = np.array([len(d) for d in self.pending], np.int64)
        return {"epoch": self.epoch, "cursor": self.cursor, "offset": self.offset, "counter": self.counter,
                "kept_in_epoch": self.kept_in_epoch, "carry": self.carry.copy(),
                "pending_tokens": np.concatenate(self.pending) if self.pending else np.zeros(0, np.int64),
                "pending_lengths": lengths,
                "buffer": np.stack(self.buffer) if self.buffer else np.zeros((0, 2, self.spec.n_ctx), np.int64),
                "rng": self.rng.bit_generator.state}

    # -- reading samples ---------------------------------------------------------------------------
    def _order(self) -> np.ndarray:
        # once per epoch, not per shard opened: with 10,000 shards a permutation per open was most of the
        # loader's time (quadratic in the shard count)
        if getattr(self, "_order_epoch", None) != self.epoch:
            self._order_cache = np.random.default_rng([self.spec.seed, self.epoch]).permutation(len(self.spec.shards))
            self._order_epoch = self.epoch
        return self._order_cache

    def _open(self) -> None:
        at = self._order()[self.cursor]
        # again here, not only at the start: a long run opens a shard hours after the start check
        check_shard_file(self.spec.shards[at], self.spec.shard_bytes[at], self.spec.shard_tasks[at])
        self._path, self._task = self.spec.shards[at], self.spec.shard_tasks[at]
        self._samples = iter(tarfile_samples([{"url": self._path}]))
        for _ in range(self.offset):  # resume: skip (not decode) the samples already read
            self._read_sample()

    def _read_sample(self) -> dict[str, Any] | None:
        """The next webdataset sample of the open shard (None at its end); tar damage the size check
        cannot see (same size, bad bytes) becomes an error naming the shard and the repair."""
        try:
            return next(self._samples, None)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise FormatError(f"{self._path}: unreadable tar ({type(exc).__name__}: {exc}); the shard is "
                              f"damaged; {shard_repair_hint(self._path, self._task)}") from None

    def _next_documents(self) -> list[np.ndarray]:
        """The documents of the next sample of this stream (wrapping epochs)."""
        spec = self.spec
        while True:
            if self._samples is None:
                self._open()
            sample = self._read_sample()
            if sample is None:
                self._samples, self.offset = None, 0
                self.cursor += 1
                if self.cursor == len(spec.shards):
                    if self.kept_in_epoch == 0:
                        raise FormatError(f"stream {spec.stream} of {spec.n_streams} got no sample in a whole "
                                          f"epoch: the corpus holds only {self.counter} samples; lower "
                                          "data.streams (or data.workers / ranks) or prep more data")
                    self.epoch, self.cursor, self.counter, self.kept_in_epoch = self.epoch + 1, 0, 0, 0
                continue
            self.offset += 1
            mine = self.counter % spec.n_streams == spec.stream
            self.counter += 1
            if mine:
                self.kept_in_epoch += 1
                tokens, lengths = decode_sample(sample, spec.dtype)
                return np.split(tokens.astype(np.int64), np.cumsum(lengths)[:-1]) if len(lengths) else []

    # -- sequences ---------------------------------------------------------------------------------
    def _next_sequence(self) -> np.ndarray:
        """[2, n_ctx]: input ids and aligned labels (-100 = ignore)."""
        n = self.spec.n_ctx
        if self.spec.mode == "packed":
            while len(self.carry) < n + 1:
                self.carry = np.concatenate([self.carry, *self._next_documents()])
            window, self.carry = self.carry[: n + 1], self.carry[n:]  # stride n: every token is a target once
            return np.stack([window[:-1], window[1:]])
        while True:
            while not self.pending:
                self.pending = self._next_documents()
            doc = self.pending.pop(0)[: n + 1]
            if len(doc) >= 2:
                return pad_document(doc, n, self.spec.pad_side, self.spec.eos)

    def _next_shuffled(self) -> np.ndarray:
        seq = self._next_sequence()
        if self.spec.shuffle_buffer <= 1:
            return seq
        while len(self.buffer) < self.spec.shuffle_buffer:  # fill once, then swap one in, one out
            self.buffer.append(seq)
            seq = self._next_sequence()
        i = int(self.rng.integers(len(self.buffer)))
        out, self.buffer[i] = self.buffer[i], seq
        return out

    def next_micro_batch(self) -> np.ndarray:
        return np.stack([self._next_shuffled() for _ in range(self.spec.micro_batch)])  # [m, 2, n_ctx]


def pad_document(doc: np.ndarray, n_ctx: int, pad_side: str, eos: int) -> np.ndarray:
    inputs, labels = doc[:-1], doc[1:]
    pad = n_ctx - len(inputs)
    pad_in, pad_lab = np.full(pad, eos, np.int64), np.full(pad, IGNORE, np.int64)
    if pad_side == "left":
        return np.stack([np.concatenate([pad_in, inputs]), np.concatenate([pad_lab, labels])])
    return np.stack([np.concatenate([inputs, pad_in]), np.concatenate([labels, pad_lab])])


def _round_robin(streams: list[Stream]):
    while True:
        for stream in streams:
            yield stream.spec.stream, stream.next_micro_batch(), None


def _identity(x):
    return x


def _worker_init(_worker_id: int) -> None:
    # a worker outlives a SIGKILLed rank by up to torch's 5 s status poll; with this it goes at once
    die_with_parent()


class _RankStreams(IterableDataset):
    """Yields (stream id, micro-batch, stream state after it) for this rank's streams in the order
    micro-batches are consumed (starting at local stream `start`); worker w of n owns the positions
    i % n == w of that rotated order, which matches the DataLoader's round-robin over workers."""

    def __init__(self, specs: list[StreamSpec], states: list[dict], start: int):
        self.specs = specs[start:] + specs[:start]
        self.states = states[start:] + states[:start]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = [Stream(s, st) for i, (s, st) in enumerate(zip(self.specs, self.states)) if i % nw == wid]
        while True:
            for stream in mine:
                batch = stream.next_micro_batch()
                yield stream.spec.stream, batch, stream.state()


class TrainLoader:
    """The rank's iterator of (input_ids, labels) micro-batches, with `state_dict()` for checkpoints."""

    def __init__(self, cfg, rank: int, world: int, states: dict[int, dict] | None = None, consumed: int = 0):
        data, n_ctx = cfg.data, cfg.model.n_ctx
        manifest = check_manifest(data.path, cfg.model, data)
        records = [s for s in manifest["shards"] if s["split"] == "train"]
        shards = tuple(str(p) for p in shard_paths(data.path, manifest, "train"))
        if not shards:
            raise FormatError(f"{Path(data.path) / 'manifest.json'}: no train shards; re-run data_prep")
        workers = max(1, data.workers)
        n_streams = data.streams or world * workers
        if n_streams % world or (n_streams // world) % workers:
            raise FormatError(f"data.streams={n_streams} must be a multiple of world_size*max(1, data.workers)"
                              f" = {world}*{workers}; set --data.streams accordingly")
        self.local = list(range(rank, n_streams, world))
        self.specs = [StreamSpec(shards, s, n_streams, cfg.run.seed, n_ctx, data.mode, data.pad_side,
                                 int(manifest["eos_id"]), manifest["dtype"], data.shuffle_buffer,
                                 cfg.train.micro_batch, tuple(r.get("bytes") for r in records),
                                 tuple(int(r.get("task", 0)) for r in records)) for s in self.local]
        self.states = {spec.stream: (states or {}).get(spec.stream) or new_state(spec) for spec in self.specs}
        self.workers = data.workers
        self.consumed = consumed  # micro-batches taken by this rank: where the round-robin over streams is
        self._it = None
        self._live: dict[int, Stream] = {}

    def _iterator(self):
        start = self.consumed % len(self.local)
        if self.workers == 0:  # in this process: read the states only when a checkpoint asks for them
            streams = [Stream(spec, self.states[spec.stream]) for spec in self.specs]
            self._live = {st.spec.stream: st for st in streams}
            return _round_robin(streams[start:] + streams[:start])
        ds = _RankStreams(self.specs, [self.states[s] for s in self.local], start)
        return iter(DataLoader(ds, batch_size=None, num_workers=self.workers, collate_fn=_identity,
                               prefetch_factor=4, persistent_workers=False, worker_init_fn=_worker_init))

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self._iterator()
        try:
            stream, batch, state = next(self._it)
        except FormatError as exc:  # from a worker, torch wraps it in its traceback text: keep the message
            raise FormatError(str(exc).rstrip().splitlines()[-1].split("FormatError: ", 1)[-1]) from None
        if state is not None:  # from a worker: the state right after this micro-batch
            self.states[stream] = state
        self.consumed += 1
        batch = torch.as_tensor(batch)
        return batch[:, 0].contiguous(), batch[:, 1].contiguous()

    def state_dict(self) -> dict[int, dict]:
        if self._live:
            return {s: stream.state() for s, stream in self._live.items()}
        return dict(self.states)


# -- state files: numpy arrays + JSON scalars in an .npz, loaded with allow_pickle=False -------------
def save_stream_state(path: Path, state: dict[str, Any]) -> None:
    import json
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, _json=np.frombuffer(json.dumps(scalars).encode(), np.uint8), **arrays)
    tmp.replace(path)


def load_stream_state(path: Path) -> dict[str, Any]:
    import json
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files if k != "_json"}
            state.update(json.loads(bytes(z["_json"]).decode()))
    except Exception as exc:
        raise FormatError(f"{path}: unreadable loader state ({exc}); the checkpoint is corrupt: delete "
                          "its directory to resume from the previous one") from None
    return state
