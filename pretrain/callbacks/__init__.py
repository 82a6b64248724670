"""Everything around a training step, as callbacks that own their cadence (see base.py):

    TrainScalars -> Speed -> Validation -> LayerStats -> Metrics -> Status -> Checkpointing -> Console -> Signals

The order is the order of a step's row: made by the first ones, written by Metrics, printed by Console."""
from __future__ import annotations

from pretrain.callbacks.base import Callback, Loop, StepOutput
from pretrain.callbacks.checkpoint import Checkpointing
from pretrain.callbacks.console import Console
from pretrain.callbacks.hardware import device_info, device_peak_flops, peak_memory_mb
from pretrain.callbacks.layers import LayerStats, layer_stats
from pretrain.callbacks.metrics import Metrics, MetricsLog, TrainScalars
from pretrain.callbacks.signals import Signals, StopSignals
from pretrain.callbacks.speed import Speed
from pretrain.callbacks.status import Status
from pretrain.callbacks.validation import Validation


def default_callbacks(cfg, is_main: bool) -> list[Callback]:
    """The standard set for a rank; file and console callbacks only on the main rank."""
    chain: list[Callback] = [TrainScalars(), Speed(), Validation(), LayerStats(), Metrics(), Status(),
                             Checkpointing()]
    if not cfg.log.quiet:
        chain.append(Console())
    chain.append(Signals())
    return [cb for cb in chain if is_main or not cb.main_rank_only]


__all__ = ["Callback", "Checkpointing", "Console", "LayerStats", "Loop", "Metrics", "MetricsLog", "Signals",
           "Speed", "Status", "StepOutput", "StopSignals", "TrainScalars", "Validation", "default_callbacks",
           "device_info", "device_peak_flops", "layer_stats", "peak_memory_mb"]
