"""Human-readable summaries printed at the end of `tokenize` and by `stats`."""
from __future__ import annotations


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    return "\n".join(lines + [_row([str(c) for c in r], widths) for r in rows])


def summary(manifest: dict, out_dir: str, wall_s: float | None = None) -> str:
    totals = manifest["totals"]
    rows = [[split, f"{s['documents']:,}", f"{s['tokens']:,}", str(s["shards"]),
             f"{s['utf8_bytes'] / max(s['tokens'], 1):.3f}"] for split, s in totals["splits"].items()]
    rows.append(["total", f"{totals['documents']:,}", f"{totals['tokens']:,}", str(len(manifest["shards"])),
                 f"{totals['bytes_per_token']:.3f}"])
    lines = [f"prep {out_dir}: tokenizer {manifest['tokenizer']} (vocab {manifest['vocab_size']:,}, EOS "
             f"{manifest['eos_id']}, {manifest['dtype']}), {manifest['tasks']} tasks",
             table(["split", "documents", "tokens", "shards", "UTF-8 B/token"], rows),
             f"on disk: {totals['disk_bytes'] / 1e6:,.2f} MB = {totals['disk_bytes_per_token']:.3f} bytes/token"]
    skipped = totals.get("skipped") or {}
    lines.append(f"read {totals['read']:,} documents; skipped: "
                 + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) if skipped else "none"))
    for entry in manifest["inputs"]:
        if "txt_rule" in entry:
            lines.append(f"{entry['path']}: documents separated by {entry['txt_rule']}")
        if "error" in entry:
            lines.append(f"{entry['path']}: SKIPPED FILE: {entry['error']}")
    if wall_s:
        lines.append(f"wall {wall_s:.1f} s: {totals['tokens'] / wall_s:,.0f} tokens/s, "
                     f"{totals['utf8_bytes'] / wall_s / 1e6:.2f} MB/s")
    return "\n".join(lines)
