"""The run configuration: one TOML file describes a whole run (model, data, training, DeepSpeed,
checkpoints, logging, and the Slurm defaults used by `python -m slurm train`).

Torch-free on purpose: the Slurm launcher, the sweep expander and the eval harness read run configs
without paying for a torch import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stackcore.config import ConfigError


@dataclass
class RunSection:
    name: str = "debug"
    dir: str = "runs"  # the run directory is {dir}/{name}
    seed: int = 0


@dataclass
class ModelConfig:
    family: str = "mixer"  # a registered family (pretrain/models/registry.py): mixer, llama, gpt, ...
    d_model: int = 128
    n_layers: int = 2
    n_ctx: int = 64
    vocab_size: int = 50257
    heads: int = 1  # mixer: 1 = the flat (single-head) mixer
    ffn_mult: int = 4
    tie_embeddings: bool = False
    # predict t+1 from every token but t+1: two streams built from the family (pretrain/models/bidirectional.py)
    bidirectional: bool = False
    final_norm: bool = False  # the original mixer had none before the lm_head
    # mixer options
    expansion: int = 0  # 0 = one masked matrix; e >= 1 = Conv(n -> e*n) -> GELU -> Conv(e*n -> n)
    kernel: int = 1
    softmax: bool = False
    norm: bool = True
    residual: bool = True
    linear: bool = False
    # token-mixing structure and computation (pretrain/models/mixing_rules.py; docs/results/models.md)
    mixing: Literal["full", "toeplitz"] = "full"  # toeplitz: one weight per distance, n per block
    mixing_impl: Literal["auto", "dense", "blocked", "fft"] = "auto"  # auto: the fastest measured
    # mixer variants of the improvement study (pretrain/models/mixer_variants.py, docs/results/improvement.md)
    mixing_init: Literal["uniform", "running_mean"] = "uniform"  # running_mean: row i = 1/(i+1) on the past
    row_sum_one: bool = False  # every masked row shifted to sum to one (signed entries; no softmax)
    distance_decay: bool = False  # a learned per-distance factor (init 1) multiplies the mixing matrix
    mixing_gate: bool = False  # mixing output * sigmoid(Linear(mixing input)), element-wise
    attention_layers: tuple[int, ...] = ()  # these layers mix by causal RoPE attention instead (a hybrid)
    attention_heads: int = 4  # heads of those attention layers
    # transformers
    dropout: float = 0.0
    rope_theta: float = 10000.0

    def validate(self) -> None:
        for key in ("d_model", "n_layers", "n_ctx", "vocab_size", "heads", "kernel", "ffn_mult"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.d_model % self.heads:
            raise ConfigError(f"model.d_model={self.d_model} must be divisible by model.heads={self.heads}")
        if self.expansion < 0:
            raise ConfigError(f"model.expansion must be >= 0, got {self.expansion}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        # The family refuses options it does not implement and adds its own checks. Torch-free import.
        from pretrain.models.registry import get_family
        get_family(self.family).validate(self)
        from pretrain.models.wrapping import check_bidirectional
        check_bidirectional(self)


@dataclass
class DataConfig:
    path: str = ""  # a data_prep output directory (holds manifest.json)
    mode: Literal["packed", "document"] = "packed"
    pad_side: Literal["left", "right"] = "right"
    shuffle_buffer: int = 256  # sequences
    workers: int = 0  # DataLoader worker processes
    val_tokens: int = 65536  # the fixed validation set: first K tokens of the val split
    # Independent reader streams; micro-batch j of a step comes from stream j % streams, so runs with
    # the same `streams` see the same global batches at any world size. 0 = world_size * max(1, workers).
    streams: int = 0
    tokenizer: str = ""  # expected manifest tokenizer name ("" = accept any; the vocabulary is always checked)


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps; the first of steps/budget_tokens/budget_flops reached stops the run
    budget_tokens: int = 0  # 0 = unused
    budget_flops: float = 0.0  # 0 = unused; equal budgets make a matched-compute comparison
    micro_batch: int = 8  # sequences per rank per forward
    global_batch: int = 8  # sequences per optimizer step across all ranks
    lr: float = 5e-4
    min_lr_ratio: float = 0.0
    warmup: int = 10
    schedule: Literal["cosine", "linear", "wsd", "constant"] = "linear"
    wsd_decay_fraction: float = 0.2
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row
    device: Literal["auto", "cpu", "cuda"] = "auto"
    debug_step_sleep_s: float = 0.0  # tests only: slow each step so an outside signal lands mid-run


@dataclass
class DeepSpeedSection:
    zero_stage: int = 0

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")


@dataclass
class CheckpointConfig:
    every: int = 0  # steps; 0 = only at the end
    keep: int = 2
    resume: str = "auto"  # "auto" (latest if any), "none", or a checkpoint path


@dataclass
class LogConfig:
    every: int = 1
    eval_every: int = 0  # 0 = only at the end
    eval_tokens: int = 0  # 0 = the whole fixed validation set (data.val_tokens)
    peak_flops: float = 0.0  # 0 = from the device when known
    stats_every: int = 0  # per-layer statistics; 0 = off
    quiet: bool = False  # no console lines (metrics.jsonl, tensorboard and status.json are written anyway)


@dataclass
class SlurmSection:
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1  # ranks per node when gpus_per_node = 0
    cpus_per_task: int = 1
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = "01:00:00"
    constraint: str = ""
    mem: str = ""
    signal_lead_s: int = 90  # SIGUSR1 this long before the time limit; must exceed checkpoint time
    max_requeues: int = 10
    folder: str = ""  # submitit logs; default {run dir}/slurm
    setup: list[str] = field(default_factory=list)  # shell lines before srun, e.g. ["module load cuda/12.4"]
    sbatch: dict[str, str] = field(default_factory=dict)  # extra #SBATCH flags, e.g. {reservation = "r1"}


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    slurm: SlurmSection = field(default_factory=SlurmSection)
    # [objective] name = "next_token" plus the objective's own keys, typed and checked by the objective
    # (pretrain.objectives.build_objective): a table here because each objective brings its own keys.
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "next_token"})
    # [init] from = RUN_DIR_OR_CHECKPOINT_OR_EXPORT, freeze_embedding, freeze_blocks (pretrain.init): a
    # table because `from` is a Python keyword and cannot be a dataclass field.
    init: dict[str, Any] = field(default_factory=dict)
