"""Plots of loss curves: log-scale x, one colour per family, one line style per n_ctx, one marker per
shape within a family. Agg backend: no display needed (CI, Slurm nodes)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402

from eval.runs import AXIS_LABELS, Run  # noqa: E402
from pretrain.models.registry import family_names  # noqa: E402

COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan"]
LINE_STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
_UNREGISTERED: list[str] = []  # families of old runs no longer registered, in order of appearance


def family_index(family: str) -> int:
    """The family's place in the registry (mixer 0, llama 1, gpt 2, then later registrations), so a
    family keeps its colour across plots; unregistered names (old runs) follow in order of appearance."""
    names = family_names()
    if family in names:
        return names.index(family)
    if family not in _UNREGISTERED:
        _UNREGISTERED.append(family)
    return len(names) + _UNREGISTERED.index(family)


def family_colour(family: str) -> str:
    return COLOURS[family_index(family) % len(COLOURS)]


def family_line_style(family: str) -> str:
    return LINE_STYLES[family_index(family) % len(LINE_STYLES)]


def style_maps(runs: list[Run]) -> tuple[dict[int, str], dict[str, str]]:
    ctxs = sorted({r.n_ctx for r in runs})
    archs = sorted({r.arch for r in runs})
    per_family: dict[str, int] = {}
    markers = {}
    for arch in archs:
        fam = arch.split()[0]
        markers[arch] = MARKERS[per_family.get(fam, 0) % len(MARKERS)]
        per_family[fam] = per_family.get(fam, 0) + 1
    return {c: LINE_STYLES[i % len(LINE_STYLES)] for i, c in enumerate(ctxs)}, markers


def plot_curves(runs: list[Run], axis: str, out_png: str | Path, title: str = "") -> Path:
    """Validation loss (left) and bits per byte (right) against `axis` for every run."""
    out_png = Path(out_png)
    styles, markers = style_maps(runs)
    has_bpb = any(r.curve(axis).bpb.size and (r.curve(axis).bpb == r.curve(axis).bpb).any() for r in runs)
    ncols = 2 if has_bpb else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.4), squeeze=False)
    labelled: set[str] = set()
    for run in sorted(runs, key=lambda r: (r.family, r.n_ctx, r.arch, r.seed)):
        curve = run.curve(axis)
        label = f"{run.arch}, ctx {run.n_ctx}"
        kw = dict(color=family_colour(run.family), linestyle=styles[run.n_ctx], marker=markers[run.arch],
                  markersize=3.5, linewidth=1.4, alpha=0.85)
        for ax, y in zip(axes[0], (curve.loss, curve.bpb)):
            ax.plot(curve.x, y, label=None if label in labelled else label, **kw)
        labelled.add(label)
    for ax, ylabel in zip(axes[0], ("validation loss (nats/token)", "validation bits per byte")):
        ax.set_xscale("log")
        # Labels at 1, 2, 5 x 10^k only: short runs span less than a decade, and labelling every
        # minor tick there overprints.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)


def save_figure(fig, out_png: str | Path, dpi: int = 110) -> Path:
    """Lay out, write atomically (a reader never sees half a PNG) and close a figure. No software version
    stamp in the PNG, so the same figure rewrites the same bytes (`make results` leaves git clean)."""
    out_png = Path(out_png)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
