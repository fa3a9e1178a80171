"""Where pictures go on disk: the H.264 recorder and PNG snapshots, whole or not at all."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from rtmon import files
from rtmon.errors import UserError
from rtmon.sinks import H264Writer, Recorder, save_png


def picture(value: int = 100) -> np.ndarray:
    image = np.full((180, 320, 3), value, np.uint8)
    image[40:140, 60:260] = (0, 0, 255)
    return image


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_video_appears_under_its_name_only_when_closed(tmp_path):
    target = tmp_path / "out" / "clip.mp4"
    writer = H264Writer(target, 30, (320, 180))
    writer.write(picture())
    assert not target.exists() and len(leftovers(target.parent)) == 1  # being written, beside it, hidden
    assert writer.close() == target
    assert frames_in(target) == 1 and leftovers(target.parent) == []


@pytest.mark.parametrize("how", ["abort", "nothing written", "an error inside"])
def test_a_video_that_fails_or_is_empty_leaves_nothing(tmp_path, how):
    target = tmp_path / "clip.mp4"
    if how == "an error inside":
        with pytest.raises(RuntimeError), H264Writer(target, 30, (320, 180)) as writer:
            writer.write(picture())
            raise RuntimeError("the source went away")
    else:
        writer = H264Writer(target, 30, (320, 180))
        if how == "abort":
            writer.write(picture())
            writer.abort()
        else:
            assert writer.close() is None
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="output: cannot create folder"):
        H264Writer(tmp_path / "file" / "clip.mp4", 30, (320, 180))


def test_the_recorder_writes_pictures_on_the_clock_until_max_frames(tmp_path):
    shown = iter([None, None, *(picture(v) for v in range(10, 250, 10))])  # nothing at first: it waits
    rec = Recorder(lambda: next(shown), lambda: False, tmp_path / "rec.mp4", fps=200.0, max_frames=12)
    rec.start()
    assert rec.done.wait(30)
    assert rec.error == "" and rec.written == 12 and rec.result == tmp_path / "rec.mp4"
    assert frames_in(rec.result) == 12 and leftovers(tmp_path) == []


def test_the_recorder_stops_when_the_source_has_finished(tmp_path):
    calls = []

    def finished() -> bool:
        return len(calls) >= 3

    rec = Recorder(lambda: calls.append(1) or picture(), finished, tmp_path / "rec.mp4", fps=200.0)
    rec.start()
    assert rec.done.wait(30)
    assert rec.written == 3 and frames_in(rec.result) == 3


def test_a_recording_that_fails_keeps_its_reason_in_one_line_and_no_file(tmp_path):
    pictures = [picture(), picture()]

    def picture_or_trouble() -> np.ndarray:
        if not pictures:
            raise OSError(28, "No space left on device\nmore detail")
        return pictures.pop()

    rec = Recorder(picture_or_trouble, lambda: False, tmp_path / "rec.mp4", fps=200.0)
    rec.start()
    assert rec.done.wait(30)
    assert rec.error == "OSError: [Errno 28] No space left on device"
    assert rec.result is None and list(tmp_path.iterdir()) == []


def test_a_png_snapshot_is_written_whole(tmp_path):
    path = save_png(picture(), tmp_path / "recordings")
    assert path.parent == tmp_path / "recordings" and path.name.startswith("snapshot-") and path.suffix == ".png"
    assert np.array_equal(cv2.imread(str(path)), picture())
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("failure", ["OpenCV says no", "interrupted half-way"])
def test_a_png_snapshot_that_fails_leaves_nothing(tmp_path, monkeypatch, failure):
    def half_written(name: str, image: np.ndarray) -> bool:
        Path(name).write_bytes(b"\x89PNG\r\n")  # a few bytes, then trouble
        if failure == "OpenCV says no":
            return False
        raise KeyboardInterrupt

    monkeypatch.setattr(files.cv2, "imwrite", half_written)
    with pytest.raises(OSError if failure == "OpenCV says no" else KeyboardInterrupt):
        save_png(picture(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_matplotlib_figure_goes_the_same_way(tmp_path):
    """What `rtmon.files` offers a report's PNG (the Triton load test's, for one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    with files.atomic_path(tmp_path / "plot.png") as tmp:
        fig.savefig(tmp)  # the temporary name keeps ".png": matplotlib picks the format by it
    plt.close(fig)
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG") and leftovers(tmp_path) == []
