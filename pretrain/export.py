"""Export consolidated fp32 weights from a checkpoint of any ZeRO stage: `model.safetensors` + `config.toml`,
loadable by the model class alone (no DeepSpeed, no pickle).

    python -m pretrain.export RUN_DIR_OR_CHECKPOINT OUT_DIR
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from pretrain.checkpoint import DS_TAG, CheckpointError, list_checkpoints, verify
from pretrain.config import RunConfig
from stackcore import rundir
from stackcore.config import dump_toml, load_config
from stackcore.errors import run_cli

WEIGHTS = "model.safetensors"


def _locate(src: Path) -> tuple[Path, Path]:
    """(run dir, checkpoint dir) from either of them."""
    if (src / rundir.CONFIG).is_file():
        found = list_checkpoints(src / rundir.CHECKPOINTS)
        if not found:
            raise CheckpointError(f"{src}: run directory has no complete checkpoint under {rundir.CHECKPOINTS}/")
        return src, found[-1]
    if (src / "meta.json").is_file() and (src.parent.parent / rundir.CONFIG).is_file():
        return src.parent.parent, src
    raise CheckpointError(f"{src}: neither a run directory (with {rundir.CONFIG}) nor a checkpoints/stepN directory")


def consolidated_state_dict(ckpt: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 weights from our own checkpoint (trusted files: DeepSpeed's format needs torch.load)."""
    verify(ckpt)
    if zero_stage == 0:
        files = sorted((ckpt / DS_TAG).glob("mp_rank_*_model_states.pt"))
        if not files:
            raise CheckpointError(f"{ckpt / DS_TAG}: no mp_rank_*_model_states.pt; the checkpoint is incomplete")
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
        return {k: v.float() for k, v in state.items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)


def _objective_model(cfg) -> torch.nn.Module:
    """The model the run trained: its objective's (an autoencoder's encoder-decoder, MTP heads, ...)."""
    from pretrain.objectives import build_objective
    return build_objective(cfg).build_model()


def export(src: str | Path, out_dir: str | Path) -> Path:
    from safetensors.torch import save_model

    run_dir, ckpt = _locate(Path(src))
    cfg = load_config(RunConfig, run_dir / rundir.CONFIG)
    state = consolidated_state_dict(ckpt, cfg.deepspeed.zero_stage)
    model = _objective_model(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if cfg.model.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not fit model {cfg.model.family} (missing {missing}, "
                              f"unexpected {unexpected}); was config.toml edited after training?")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # atomic: both files appear only when complete
        save_model(model.float(), str(Path(tmp) / WEIGHTS), metadata={"source": str(ckpt)})
        (Path(tmp) / rundir.CONFIG).write_text(dump_toml(cfg, header=f"exported from {ckpt}"))
        for name in (WEIGHTS, rundir.CONFIG):
            (Path(tmp) / name).replace(out / name)
    return out


def load_model(path: str | Path) -> tuple[torch.nn.Module, RunConfig]:
    """(model in eval mode, its RunConfig) from an export directory; safetensors only, no pickle."""
    from safetensors.torch import load_model as load_weights

    path = Path(path)
    weights, config = path / WEIGHTS, path / rundir.CONFIG
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(f"{path}: not an export (needs {WEIGHTS} and {rundir.CONFIG}); make one with "
                                "`python -m pretrain.export RUN_DIR OUT_DIR`")
    cfg = load_config(RunConfig, config)
    model = _objective_model(cfg)
    load_weights(model, str(weights), strict=True)
    return model.eval(), cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m pretrain.export RUN_DIR_OR_CHECKPOINT OUT_DIR", file=sys.stderr)
        return 2
    try:
        out = export(argv[0], argv[1])
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {out / WEIGHTS}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, bad_input=(FileNotFoundError,)))
