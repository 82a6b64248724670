"""Reading run directories for evaluation: config, metrics curves, and what makes two runs comparable.

Everything goes through `stackcore.rundir` (the one reader of the run-directory layout). A `Run` knows
its architecture label (family + shape), its n_ctx and seed, its validation-loss curve against each
x-axis (cumulative FLOPs, tokens, wall seconds), and the identity of its validation set: runs are only
comparable when the data fingerprint, the validation-set size and the tokenizer agree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stackcore import rundir
from stackcore.errors import UserError

# x-axis name on the command line -> key in metrics.jsonl
AXES = {"flops": "flops", "tokens": "tokens", "time": "wall_s"}
AXIS_LABELS = {"flops": "training FLOPs (dense, model accounting)", "tokens": "training tokens",
               "time": "wall-clock seconds"}
# Config sections that do not change what is trained (naming, logging, where it ran).
_NOT_CONFIGURATION = ("run", "checkpoint", "log", "slurm")


class CompareError(UserError, ValueError):
    """Runs that cannot be compared (different validation data or tokenizer, no validation points...)."""


@dataclass
class Curve:
    """Validation points of one run against one x-axis, sorted by x, x > 0 (log axes)."""
    x: np.ndarray
    loss: np.ndarray
    bpb: np.ndarray  # NaN where a row had no val_bpb


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("run", {}).get("name") or self.path.name)

    @property
    def model(self) -> dict[str, Any]:
        return self.config.get("model", {})

    @property
    def family(self) -> str:
        return str(self.model.get("family", "?"))

    @property
    def n_ctx(self) -> int:
        return int(self.model.get("n_ctx", 0))

    @property
    def seed(self) -> int:
        return int(self.config.get("run", {}).get("seed", 0))

    @property
    def arch(self) -> str:
        """Architecture label: family and shape (n_ctx is reported separately)."""
        m = self.model
        label = f"{self.family} d{m.get('d_model', '?')}x{m.get('n_layers', '?')}"
        if int(m.get("heads", 1)) != 1 or self.family != "mixer":
            label += f" h{m.get('heads', 1)}"
        return label

    @property
    def configuration(self) -> str:
        """Everything that defines what was trained except the seed and the name: seeds of one
        configuration are averaged together."""
        table = {k: v for k, v in self.config.items() if k not in _NOT_CONFIGURATION}
        return json.dumps(table, sort_keys=True, default=str)

    @property
    def hardware(self) -> str:
        """Device description for matched wall-clock comparisons ('' when the run did not record one)."""
        for row in reversed(self.metrics):
            for key in ("device", "hardware"):
                if row.get(key):
                    return str(row[key])
        return str(self.config.get("train", {}).get("device_name", ""))

    def val_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.metrics if r.get("val_loss") is not None and np.isfinite(r["val_loss"])]

    def curve(self, axis: str) -> Curve:
        key = AXES[axis]
        pts = [(float(r[key]), float(r["val_loss"]),
                float(r["val_bpb"]) if r.get("val_bpb") is not None else np.nan)
               for r in self.val_rows() if r.get(key) is not None and float(r[key]) > 0]
        pts.sort()
        arr = np.array(pts, dtype=float).reshape(-1, 3)
        return Curve(arr[:, 0], arr[:, 1], arr[:, 2])

    def final(self, key: str) -> float | None:
        rows = self.val_rows()
        return float(rows[-1][key]) if rows and rows[-1].get(key) is not None else None


def _manifest_identity(data_path: str, run_dir: Path) -> dict[str, Any]:
    """Fingerprint and tokenizer from the prep directory's manifest, when the run recorded only a path."""
    if not data_path:
        return {}
    for base in (Path.cwd(), run_dir, run_dir.parent, run_dir.parent.parent):
        cand = Path(data_path) if Path(data_path).is_absolute() else base / data_path
        manifest = cand / "manifest.json"
        if manifest.is_file():
            table = json.loads(manifest.read_text())
            return {"fingerprint": table.get("fingerprint"), "tokenizer": table.get("tokenizer"),
                    "ranks_sha256": table.get("ranks_sha256")}
    return {}


def validation_identity(config: dict[str, Any], metrics: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    """What the validation loss was measured on: data fingerprint, number of validation tokens, tokenizer.

    Read from the run itself first (config [data] keys or metrics rows the trainer writes), then from the
    manifest of the prep directory named by data.path.
    """
    data = config.get("data", {})
    ident: dict[str, Any] = {}
    val_rows = [r for r in metrics if r.get("val_set")]
    # What the trainer recorded at its last evaluation comes first (it names the tokenizer by its ranks' hash).
    sources = [r["val_set"] for r in val_rows[-1:]] + [data, config.get("validation", {})] + metrics[:1] + metrics[-1:]
    for src in sources:
        for out_key, keys in (("fingerprint", ("fingerprint", "manifest_fingerprint", "data_fingerprint")),
                              ("tokenizer", ("tokenizer", "tokenizer_sha256", "ranks_sha256")),
                              ("val_tokens", ("val_tokens", "eval_tokens_total"))):
            for key in keys:
                if ident.get(out_key) is None and src.get(key) not in (None, ""):
                    ident[out_key] = src[key]
    if ident.get("fingerprint") is None or ident.get("tokenizer") is None:
        found = _manifest_identity(str(data.get("path", "")), run_dir)
        ident.setdefault("fingerprint", None)
        ident.setdefault("tokenizer", None)
        if ident["fingerprint"] is None:
            ident["fingerprint"] = found.get("fingerprint")
        if ident["tokenizer"] is None:
            ident["tokenizer"] = found.get("ranks_sha256") or found.get("tokenizer")
    # Packed and per-document validation sets hold different sequences of the same tokens.
    ident["mode"] = data.get("mode")
    # What val_loss measures: objectives whose targets are not the next token record it (e.g. an autoencoder).
    ident["target"] = next((r["val_target"] for r in val_rows[-1:] if r.get("val_target")), "next_token")
    if config.get("model", {}).get("bidirectional"):  # it sees every token but t+1: not a causal loss
        ident["target"] += " (bidirectional)"
    # The loss is averaged over log.eval_tokens of the fixed set when that is set (0 = all of it).
    eval_tokens = int(config.get("log", {}).get("eval_tokens", 0) or 0)
    if eval_tokens and ident.get("val_tokens") is not None:
        ident["val_tokens"] = min(int(ident["val_tokens"]), eval_tokens)
    return ident


def load_run(path: str | Path) -> Run:
    path = Path(path)
    config = rundir.read_config(path)
    metrics = rundir.read_metrics(path)
    run = Run(path=path, config=config, metrics=metrics)
    run.validation = validation_identity(config, metrics, path)
    return run


def load_runs(paths: list[str | Path], require_val: bool = True) -> list[Run]:
    runs = []
    for p in paths:
        run = load_run(p)
        if require_val and not run.val_rows():
            raise CompareError(f"{Path(p) / rundir.METRICS}: no validation points (val_loss); the run has not "
                               "evaluated yet -- set log.eval_every or let it finish")
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        # Two directories with one run name (e.g. copies): fall back to directory paths as names.
        for r in runs:
            r.config.setdefault("run", {})["name"] = str(r.path)
    return runs


def check_comparable(runs: list[Run], allow_unknown: bool = False) -> dict[str, Any]:
    """Raises CompareError unless every run was validated on the same data with the same tokenizer.
    `allow_unknown` lets through runs that did not record an item, never runs that differ in one."""
    for r in runs:
        missing = [k for k in ("fingerprint", "tokenizer", "val_tokens") if r.validation.get(k) is None]
        if missing and not allow_unknown:
            raise CompareError(
                f"{r.path}: cannot tell which validation set this run used (missing {', '.join(missing)} in "
                f"{rundir.CONFIG}/[data] and {rundir.METRICS}, and no manifest.json at data.path="
                f"{r.config.get('data', {}).get('path', '')!r}); keep the prep directory where the run can "
                "find it, or pass --no-data-check to compare anyway")
    ref = runs[0]
    for r in runs[1:]:
        for key, what in (("tokenizer", "tokenizers"), ("fingerprint", "validation data (manifest fingerprint)"),
                          ("val_tokens", "validation-set sizes (val_tokens)"),
                          ("mode", "validation sequence modes (data.mode packed/document)"),
                          ("target", "validation targets (val_target: what the objective's val_loss measures)")):
            mine, theirs = r.validation.get(key), ref.validation.get(key)
            if mine is not None and theirs is not None and mine != theirs:
                raise CompareError(
                    f"refusing to compare: {ref.path} and {r.path} have different {what}: "
                    f"{theirs!r} vs {mine!r}; their losses are not on the same scale. "
                    "Compare only runs evaluated on the same prepared validation split and tokenizer")
    return dict(ref.validation)


def run_params(run: Run, kind: str = "non_embedding") -> float:
    """Parameter count of a run's model: recorded by the run when it did (metrics key `params_{kind}`),
    else from the models' own accounting on the run's [model] config (no model is built)."""
    for row in run.metrics:
        if row.get(f"params_{kind}"):
            return float(row[f"params_{kind}"])
    from pretrain.config import ModelConfig
    from pretrain.models.flops import param_counts
    from stackcore.config import from_dict
    return float(param_counts(from_dict(ModelConfig, run.model))[kind])
