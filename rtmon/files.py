"""Small file helpers for everything rtmon writes (caches, exports, plans, reports, recordings,
snapshots): checksums, names for new outputs, and writes that either complete or leave nothing
behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def timestamped(folder: Path, stem: str, suffix: str) -> Path:
    """A new output's name in `folder`: `<stem>-YYYYmmdd-HHMMSS<suffix>`."""
    return folder / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{suffix}"


class PendingFile:
    """A hidden temporary file beside `target` that becomes `target` on `commit()` and is removed
    on `discard()`: for writers that stay open across calls (a video being recorded). The
    temporary name keeps the target's suffix, so libraries that choose a format by it still do."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=f".partial{self.target.suffix}",
                                    dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(name)

    def commit(self) -> Path:
        os.chmod(self.tmp, 0o644)  # mkstemp makes it private; outputs and caches are ordinary files
        self.tmp.replace(self.target)
        return self.target

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside `target`, renamed onto it only if the block succeeds."""
    pending = PendingFile(target)
    try:
        yield pending.tmp
        pending.commit()
    finally:
        pending.discard()


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_image(path: Path, image: np.ndarray) -> Path:
    """A BGR picture as an image file (PNG, JPEG: by the suffix), written whole or not at all.
    (A matplotlib figure goes the same way: `with atomic_path(path) as tmp: fig.savefig(tmp)`.)"""
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):  # OpenCV says only True or False
            raise OSError(f"cannot write {path}")
    return path


def write_folder(out: Path, writers: dict[str, Callable[[Path], None]]) -> list[Path]:
    """Write several files into `out` together: each writer fills its file in a hidden temporary
    folder beside them, and only when all succeeded are they moved into place. A failure or an
    interrupt leaves `out` as it was."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as tmp:
        for name, write in writers.items():
            write(Path(tmp) / name)
            os.chmod(Path(tmp) / name, 0o644)
        for name in writers:
            os.replace(Path(tmp) / name, out / name)
    return [out / name for name in writers]
