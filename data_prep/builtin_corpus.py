"""`builtin:python-docs`: English prose that ships with every Python, extracted at run time.

Part 0 is `pydoc_data.topics` (the language reference topics behind `help()`), one document per topic in
sorted order. Parts 1..STDLIB_PARTS hold the standard library's docstrings, one document per module,
read with `ast` from the source files (the modules are never imported: no side effects, no platform
surprises), in sorted path order and cut into contiguous parts so the corpus splits into several tasks.
The order depends only on the Python installation, so reruns give identical shards.
"""
from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Iterator

BUILTIN_PREFIX = "builtin:"
BUILTIN_NAMES = ("python-docs",)
STDLIB_PARTS = 4
# Test suites and vendored code are not prose about the library.
EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}


def builtin_parts(spec: str) -> list[int]:
    """The part numbers (one task each) of a builtin corpus spec such as `builtin:python-docs`."""
    name = spec[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_NAMES:
        raise ValueError(f"{spec}: unknown builtin corpus; available: "
                         f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_NAMES)}")
    return list(range(STDLIB_PARTS + 1))


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(node: ast.AST, prefix: str) -> Iterator[str]:
    """`qualified.name` + docstring for the node and its classes/functions, in source order."""
    doc = ast.get_docstring(node, clean=True)
    if doc:
        yield f"{prefix}\n{doc}"
    for child in getattr(node, "body", []):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _docstrings(child, f"{prefix}.{child.name}")


def module_document(path: Path, module: str) -> tuple[str, str]:
    """(text, skip reason or "") for one stdlib source file."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return "", "unparsable_module"
    text = "\n\n".join(_docstrings(tree, module))
    return (text, "") if text else ("", "no_docstrings")


def builtin_documents(spec: str, part: int) -> Iterator[tuple[str, str, str]]:
    """(name, text, skip_reason) for every document of one part."""
    builtin_parts(spec)
    if part == 0:
        from pydoc_data.topics import topics

        for name in sorted(topics):
            yield f"pydoc topic {name}", topics[name], ""
        return
    files = stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    lo, hi = (part - 1) * len(files) // STDLIB_PARTS, part * len(files) // STDLIB_PARTS
    for path in files[lo:hi]:
        rel = path.relative_to(root).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        text, reason = module_document(path, module)
        yield str(rel), text, reason
