"""Shape labels of the protocol configs (configs/protocol/*.toml): `VARIANT[-SIZE]`, e.g. `llama-s`,
`mixer-combo-xs`, `gpt-deep`, `mixer`. The variant names the model (a family, or a family plus options:
`mixer-combo`); the size tag names the Llama shape a shape was FLOP-matched to (`mixer-s` was matched to
`llama-s`). One place for this rule: the reports pair shapes by it and the IsoFLOP fits pool sizes by it."""
from __future__ import annotations

REFERENCE = "llama"
# smallest to largest at 2 layers, then the deep shape (the order tables list them in)
SIZE_TAGS = ("xxxs", "xxs", "xs", "s", "", "l", "deep")


def split_label(label: str) -> tuple[str, str]:
    """`mixer-combo-s` -> ("mixer-combo", "s"); `llama` -> ("llama", ""); `llama-deep` -> ("llama", "deep")."""
    variant, _, size = label.rpartition("-")
    if variant and size in SIZE_TAGS:
        return variant, size
    return label, ""


def size_rank(size: str) -> int:
    return SIZE_TAGS.index(size) if size in SIZE_TAGS else len(SIZE_TAGS)


def reference_for(label: str, labels: set[str]) -> str:
    """The Llama a shape is compared with: the same-size Llama when the set has one, else `llama`."""
    size = split_label(label)[1]
    same_size = f"{REFERENCE}-{size}" if size else REFERENCE
    return same_size if same_size in labels else REFERENCE
