"""The input's signature: names and content (sha256) of the input files, read without decoding.

Only regular files are opened (a FIFO or a device named by a CSV never blocks the run before
ingest's one-line error), and for a CSV only files inside its folder (ingest's rule).
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path

import pandas as pd

from augment.config import DataConfig


def input_signature(d: DataConfig) -> str:
    """Names and content (sha256) of the input files: a re-run with the same images is a cache hit
    even if their times changed (copied, re-synced); an added, removed or edited image re-runs ingest
    and every stage that depends on it."""
    if d.source == "digits":
        return "sklearn-digits"
    if d.test_path is not None:  # the test split's files count too
        return input_signature(d.model_copy(update={"test_path": None})) + "+" + \
            input_signature(d.model_copy(update={"path": d.test_path, "test_path": None}))
    root = Path(d.path)
    inside = None  # where the files named by a CSV must be (read_csv's rule)
    if d.source == "csv" and root.is_file():
        inside = root.parent.resolve()
        try:
            rels = pd.read_csv(root, dtype=str, keep_default_na=False).get("path", pd.Series(dtype=str))
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
            rels = pd.Series(dtype=str)
        files = [root, *((root.parent / r) for r in rels)]
    elif root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.is_file())
    else:
        files = [root, *root.parent.glob("*labels-idx1-ubyte*")] if d.source == "idx" else [root]
    h = hashlib.sha256()
    for f in files:  # names as bytes: a file name need not be valid UTF-8
        h.update(os.fsencode(f.relative_to(root) if f.is_relative_to(root) else f.name))
        h.update(f"|{_content_hash(f, inside if f != root else None)}\n".encode())
    return h.hexdigest()[:16]


def _content_hash(path: Path, root: Path | None = None) -> str:
    """sha256 of a file's bytes ('missing' if it cannot be read; 'not-a-file' for a FIFO, device
    or socket and 'outside' for a file outside root, neither ever opened: ingest refuses both by
    name). Every stage's fingerprint asks for it, so it is memoised per inode, size, mtime and
    ctime (any write moves ctime, which no tool can set back): the files are read once per process."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "not-a-file"
    if root is not None and not path.resolve().is_relative_to(root):
        return "outside"
    return _hash_file(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=200_000)
def _hash_file(path: str, *stat_key: int) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return "missing"
