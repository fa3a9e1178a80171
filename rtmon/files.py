"""Small file helpers shared by the caches (sample clip, model exports, plans): checksums and
writes that either complete or leave nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside `target`, renamed onto it only if the block succeeds."""
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; caches are ordinary files
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
