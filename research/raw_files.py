"""The study's raw result files, read the same whether stored plain or gzip-compressed.

collect_results.py stores what it collects as ``<file>.gz`` (one gzip per file, so
``ranks/<run>.*`` globs and per-run names keep working); folders collected before
hold the files plain (research/results_raw/2026-11-26). Every reader in research/
opens result files through this module so both kinds read alike.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

GZ = ".gz"


def plain_name(path: str | Path) -> str:
    """The file name of ``path`` without a trailing ``.gz`` (``x.test_ranks.npy.gz`` -> ``x.test_ranks.npy``)."""
    return Path(path).name.removesuffix(GZ)


def run_name(path: str | Path, suffix: str) -> str:
    """``path``'s name without ``.gz`` and then ``suffix`` (``ranks/r_s1.test_ranks.npy.gz`` -> ``r_s1``)."""
    return plain_name(path).removesuffix(suffix)


def read_bytes(path: str | Path) -> bytes:
    """The contents of ``path``, decompressed when its name ends in ``.gz``."""
    data = Path(path).read_bytes()
    return gzip.decompress(data) if str(path).endswith(GZ) else data


def read_text(path: str | Path) -> str:
    """:func:`read_bytes` as UTF-8 text."""
    return read_bytes(path).decode("utf-8")


def load_array(path: str | Path) -> np.ndarray:
    """``np.load`` of a ``.npy`` or ``.npy.gz`` file (no pickles)."""
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def write_compressed(path: Path, data: bytes) -> None:
    """Write ``data`` gzip-compressed to ``path`` (a ``.gz`` name), atomically. The gzip header
    carries no time stamp or file name, so the same data always gives the same bytes."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
        compressed.write(data)
    os.replace(tmp, path)


def check_unique(paths: Iterable[str | Path]) -> None:
    """Raise ValueError when two of ``paths`` are plain and compressed copies of one file
    (the run would count twice)."""
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        key = (str(Path(path).parent), plain_name(path))
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} are copies of one file: delete one of them")
        seen[key] = str(path)


def find(folder: Path, suffix: str) -> list[Path]:
    """The files of ``folder`` named ``*<suffix>`` or ``*<suffix>.gz``, in order of their plain
    names; ValueError when a file is there both plain and compressed."""
    paths = sorted([*folder.glob(f"*{suffix}"), *folder.glob(f"*{suffix}{GZ}")], key=plain_name)
    check_unique(paths)
    return paths
