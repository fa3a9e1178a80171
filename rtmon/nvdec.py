"""Video files decoded by the GPU's NVDEC straight into device memory (PyNvVideoCodec).

`open_nvdec(path)` yields `(index, frame)` with `frame` a CUDA uint8 HxWx3 **BGR** tensor,
the layout OpenCV decodes to, so a GPU engine treats it like an uploaded host frame and skips
the upload. Decoding stays asynchronous to the host in batches of `batch` frames.

CPU decoding (OpenCV) remains the portable default: on an H100 one 1280×720 H.264 stream
decodes at about the same rate either way (docs in /work/shared/device/README.md), so NVDEC
pays when the CPU is busy or several streams are decoded, not for one stream on a big CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

from rtmon.errors import UserError

INSTALL_HINT = "pip install pynvvideocodec (or rtmon[gpu]); it needs an NVIDIA GPU and driver with NVDEC"


def nvdec_unavailable_reason() -> str | None:
    """None when NVDEC decoding can be used here; else a one-line reason with the fix."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return f"PyNvVideoCodec is not installed; {INSTALL_HINT}"
    import torch

    if not torch.cuda.is_available():
        return "NVDEC decoding needs an NVIDIA GPU with a working driver and a CUDA build of torch"
    return None


def open_nvdec(path: str | Path, batch: int = 8, gpu_id: int = 0) -> Iterator[tuple[int, object]]:
    """Yield (frame index, CUDA uint8 HxWx3 BGR tensor) for every frame of a video file."""
    why = nvdec_unavailable_reason()
    if why:
        raise UserError(f"source: {why}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"source: {path}: no such file")
    import PyNvVideoCodec as nvc
    import torch

    try:
        decoder = nvc.SimpleDecoder(
            str(path), gpu_id=gpu_id, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB
        )
    except Exception as exc:
        raise UserError(f"source: NVDEC cannot open {path} ({type(exc).__name__}: {exc})") from None
    return _frames(decoder, batch, torch)


def _frames(decoder, batch: int, torch) -> Iterator[tuple[int, object]]:
    index = 0
    while True:
        surfaces = decoder.get_batch_frames(batch)
        if not surfaces:
            return
        # flip() copies, which both gives OpenCV's BGR order and detaches each frame from the
        # decoder's surface pool. No view of a surface outlives this batch, so none can be
        # released after the decoder (a generator dropped mid-file frees the decoder first),
        # and the pool is reused by the next batch, so the copies are waited for.
        frames = [torch.from_dlpack(s).flip(-1) for s in surfaces]
        del surfaces
        torch.cuda.current_stream().synchronize()
        for frame in frames:
            yield index, frame
            index += 1
