"""The files a checkout run reads: folders, files and glob patterns expanded, output names."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InputFile", "find_inputs", "output_stems"]


@dataclass
class InputFile:
    """A file to check out: ``path`` on disk and ``name``, its path relative to its input."""

    path: Path
    name: str


def find_inputs(
    inputs: Sequence[str], exclude: str | os.PathLike | None = None
) -> tuple[list[InputFile], list[dict]]:
    """Expand folders (recursively, every file) and glob patterns into a sorted list of files.

    Args:
        inputs: folders, files or glob patterns (``**`` recurses).
        exclude: a folder whose files are never inputs (the output folder).

    Returns:
        (files, problems): ``problems`` lists ``{"file", "reason"}`` for inputs matching nothing.
    """
    skip = Path(exclude).resolve() if exclude else None
    files, problems, seen = [], [], set()

    def add(path: Path, root: Path) -> None:
        real = path.resolve()
        if real in seen or (skip and real.is_relative_to(skip)):
            return
        seen.add(real)
        files.append(InputFile(path, path.relative_to(root).as_posix()))

    for pattern in inputs:
        path = Path(pattern)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for f in sorted(filenames):
                    add(Path(dirpath) / f, path)
        elif path.is_file():
            add(path, path.parent)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                problems.append({"file": pattern, "reason": "the pattern matches no file"})
            root = Path(os.path.commonpath([m.parent for m in matches])) if matches else None
            for m in matches:
                add(m, root)
        else:
            problems.append({"file": pattern, "reason": "no such file or folder"})
    return files, problems


def output_stems(files: Sequence[InputFile]) -> list[str]:
    """``sub/a.jpg`` -> ``sub/a``; names made unique (``a.jpg``, ``a.png`` -> ``a``, ``a_2``)."""
    stems, used = [], set()
    for f in files:
        base = Path(f.name).with_suffix("").as_posix()
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems
