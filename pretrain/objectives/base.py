"""The objective seam: what a training batch holds, the loss, the validation metrics and the FLOPs per
sample. The trainer, the validation callback and `python -m eval loss` only talk to an `Objective`, so a
new objective (autoencoder, multi-token prediction, retrieval, ...) is one module under
`pretrain/objectives/` and never an edit of the loop. See docs/extending.md ("Objectives").

Lifecycle (all on every rank):
    objective = build_objective(run_cfg)       # typed options from [objective]; check() against data/model
    model = objective.build_model()            # a registered family, or a wrapper built from families
    batch = objective.batch(raw, device)       # raw = what the loader yields for one micro-batch
    loss, n_targets = objective.loss(model, batch)
    val = objective.validation_set(manifest)   # fixed, identical for every run on a manifest
    metrics = objective.evaluate(model, val, world, micro_batch, max_tokens)   # {"val_loss": ..., ...}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from stackcore.config import ConfigError


@dataclass
class NoOptions:
    """The options of an objective without keys of its own ([objective] holds only `name`)."""


class Objective:
    """Base class: subclasses set `name` (and `Options`, a dataclass of their own [objective] keys) and
    implement `loss`, `eval_sums` and `metrics`; the rest has defaults that fit causal-LM batches."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    data_modes: ClassVar[tuple[str, ...]] = ("packed", "document")  # data.mode values this objective reads

    def __init__(self, options: Any, cfg):
        self.options = options
        self.cfg = cfg  # the whole RunConfig: objectives may read model, data and train keys

    # -- setup ---------------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuses run configs this objective cannot train (ConfigError naming the key and the fix)."""
        if self.cfg.data.mode not in self.data_modes:
            raise ConfigError(f"objective {self.name!r} reads data.mode in {list(self.data_modes)}, got "
                              f"data.mode={self.cfg.data.mode!r}; set --data.mode {self.data_modes[0]}")

    def build_model(self) -> torch.nn.Module:
        """The model this objective trains; a wrapper objective (encoder + decoder) overrides this."""
        from pretrain.models import build_model
        return build_model(self.cfg.model)

    def init_targets(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The causal-LM modules `--init.from` loads a pretrained run into and `init.freeze_*` freezes
        (each needs `embedding` and `blocks`); a wrapper returns its parts, e.g. [encoder, decoder]."""
        return [model]

    def flops_per_sample(self, model_cfg=None) -> float:
        """Training (forward + backward) FLOPs of one sample; the trainer's FLOP axis and MFU use it."""
        from pretrain.models.flops import training_flops_per_token
        model_cfg = model_cfg or self.cfg.model
        return training_flops_per_token(model_cfg, model_cfg.n_ctx) * model_cfg.n_ctx

    def tokens_per_sample(self) -> int:
        """Tokens one sample feeds the model (the `tokens` axis of metrics rows)."""
        return self.cfg.model.n_ctx

    # -- training ------------------------------------------------------------------------------------
    def train_loader(self, rank: int, world: int):
        """The rank's micro-batch iterator. Another layout needs a loader with TrainLoader's checkpoint
        interface (`local`, `states`, `consumed`, `state_dict()`), which exact resume relies on."""
        from pretrain.data import TrainLoader
        return TrainLoader(self.cfg, rank, world)

    def batch(self, raw: Any, device: torch.device) -> Any:
        """One micro-batch on `device`; raw is a tensor or a tuple of tensors from the loader or the
        validation set."""
        if isinstance(raw, torch.Tensor):
            return raw.to(device, non_blocking=True)
        return tuple(x.to(device, non_blocking=True) for x in raw)

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor | int]:
        """(scalar loss to backpropagate, number of targets it averages over)."""
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------------------
    def validation_set(self, manifest: dict[str, Any]):
        """The fixed validation set (any object with len() and slicing along samples) or None."""
        from pretrain.validation import ValidationSet, validation_set
        found = validation_set(self.cfg, manifest)
        return ValidationSet(*found) if found is not None else None

    def eval_items(self, val, max_tokens: int = 0):
        """The samples evaluated: all of them, or the first ones holding about `max_tokens` tokens."""
        if max_tokens:
            return val[: max(1, math.ceil(max_tokens / self.tokens_per_sample()))]
        return val

    def eval_sums(self, model, batch) -> dict[str, float]:
        """Additive sums over one batch (e.g. summed nats and target count); summed over batches and ranks."""
        raise NotImplementedError

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        """The validation metrics of the summed sums; `val_loss` (lower is better) is the headline one."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model, val, world=None, micro_batch: int = 16, max_tokens: int = 0,
                 device: torch.device | str | None = None, progress: bool = False) -> dict[str, Any]:
        """The one evaluation loop of training and `eval loss`. With a world, samples are split across
        ranks and every rank runs the same number of forwards (ZeRO-3 gathers are collective): a rank out
        of samples runs a dummy forward whose sums are dropped."""
        from pretrain.distributed import all_reduce_sum

        items = self.eval_items(val, max_tokens)
        rank, size = (world.rank, world.size) if world is not None else (0, 1)
        device = torch.device(device) if device is not None else _model_device(model)
        mine = items[rank::size]
        n_batches = math.ceil(math.ceil(len(items) / size) / micro_batch)
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        for i in _progress(range(n_batches), progress):
            chunk = mine[i * micro_batch:(i + 1) * micro_batch]
            dummy = len(chunk) == 0
            out = self.eval_sums(model, self.batch(items[:1] if dummy else chunk, device))
            if not dummy:
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value
        model.train(was_training)
        if world is not None:
            keys = self.sum_keys()
            sums = dict(zip(keys, all_reduce_sum([sums.get(k, 0.0) for k in keys], device)))
        return self.metrics(sums, val)

    def sum_keys(self) -> list[str]:
        """The keys `eval_sums` returns, in the order ranks all-reduce them (every rank must agree, even
        one that evaluated nothing)."""
        raise NotImplementedError


def bits_per_byte(nats: float, n_bytes: float | None) -> float | None:
    """Bits per UTF-8 byte of evaluated targets whose summed loss is `nats` and whose text is `n_bytes`
    long: the one place bpb is computed (training validation and `eval loss`). None without byte counts."""
    if not n_bytes:
        return None
    return nats / math.log(2) / n_bytes


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)  # a DeepSpeed engine knows its device
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


def _progress(iterable, show: bool):
    if not show:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc="eval", unit="batch")
