"""`train-tokenizer`: a byte-level BPE (rustbpe) trained on a corpus sample, saved in tiktoken format.

    python -m data_prep train-tokenizer --input data/fineweb-edu/*.parquet --vocab-size 8000 \
        --out tokenizers/fineweb8k.tiktoken [--max-bytes 2000000000] [--text-column text]

`--vocab-size V` is the whole vocabulary: V-1 merged byte tokens (ranks 0..V-2, the 256 single bytes
first) plus `<|endoftext|>` = V-1, so a model built with vocab_size V covers every id. The regex
pre-tokenization pattern is rustbpe's (GPT-4 style). Output: FILE.tiktoken (ranks) and FILE.tiktoken.json
(name, pattern, special tokens), which `data_prep.tokenizer.load_tokenizer(FILE)` reads offline.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from stackcore.config import ConfigError
from data_prep.format import atomic_write_bytes
from data_prep.readers import InputStats, input_kind, read_documents
from data_prep.tokenizer import EOS_TEXT, load_tokenizer, metadata_path, ranks_bytes


@dataclass
class TrainTokenizerConfig:
    input: list[str] = field(default_factory=list)
    vocab_size: int = 8000
    out: str = ""
    max_bytes: int = 1_000_000_000  # the corpus sample: the first this many UTF-8 bytes, in input order
    text_column: str = "text"
    max_doc_bytes: int = 8_000_000
    progress: bool = True

    def validate(self) -> None:
        if self.vocab_size < 258:
            raise ConfigError(f"vocab_size must be >= 258 (256 bytes, one merge, EOS), got {self.vocab_size}")
        if not self.out.endswith(".tiktoken"):
            raise ConfigError(f"out must be a FILE.tiktoken path, got {self.out!r}")


def sample_texts(cfg: TrainTokenizerConfig, stats: InputStats) -> Iterator[str]:
    """Documents from the inputs, in order, until max_bytes of text (bad documents are skipped)."""
    bar = tqdm(total=cfg.max_bytes, unit="B", unit_scale=True, desc="train-tokenizer: reading sample",
               file=sys.stderr, disable=not cfg.progress)
    try:
        yield from _sample(cfg, stats, bar)
    finally:
        bar.close()


def _sample(cfg: TrainTokenizerConfig, stats: InputStats, bar) -> Iterator[str]:
    from data_prep.tasks import _parquet_units, expand_inputs
    from data_prep.builtin_corpus import builtin_parts

    budget = cfg.max_bytes
    for path in expand_inputs(cfg.input):
        kind = input_kind(path)
        if kind == "parquet":
            units = _parquet_units(path, 1, "raise")[0]
        elif kind == "builtin":
            units = [{"path": path, "kind": kind, "part": p} for p in builtin_parts(path)]
        else:
            units = [{"path": path, "kind": kind}]
        for unit in units:
            for text, utf8 in read_documents(unit, stats, text_column=cfg.text_column, on_error="skip",
                                             max_doc_bytes=cfg.max_doc_bytes):
                yield text
                budget -= len(utf8)
                bar.update(len(utf8))
                if budget <= 0:
                    return


def train(cfg: TrainTokenizerConfig):
    """Train, save FILE.tiktoken + FILE.tiktoken.json, return (rustbpe tokenizer, loaded tiktoken Encoding)."""
    import rustbpe

    cfg.validate()
    stats = InputStats()
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(sample_texts(cfg, stats), cfg.vocab_size - 1)
    ranks = dict(trainer.get_mergeable_ranks())
    eos = len(ranks)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"name": out.stem, "pat_str": trainer.get_pattern(), "special_tokens": {EOS_TEXT: eos},
            "trained_on": {"inputs": cfg.input, "documents": stats.read, "max_bytes": cfg.max_bytes},
            "trainer": "rustbpe"}
    atomic_write_bytes(out, ranks_bytes(ranks))
    atomic_write_bytes(metadata_path(out), (json.dumps(meta, indent=2) + "\n").encode())
    return trainer, load_tokenizer(out)


def main(argv: list[str]) -> int:
    from data_prep.config import parse_args_into

    cfg = parse_args_into(TrainTokenizerConfig, argv)
    started = time.perf_counter()
    trainer, enc = train(cfg)
    print(f"{cfg.out}: {enc.n_vocab:,} tokens ({enc.n_vocab - 1:,} BPE + {EOS_TEXT} = {enc.eot_token}) in "
          f"{time.perf_counter() - started:.1f} s; metadata in {metadata_path(cfg.out).name}", file=sys.stdout)
    return 0
