"""Reading the images of a plate: header checks, one-line problems, bounded parallel decoding."""
from __future__ import annotations

from collections import deque


class CheckedReader:
    """``reader(record) -> image``: reads a TIFF and checks it has the channel's shape and dtype,
    and that a float image is finite and, with ``unit_floats``, within [0, 1].

    [0, 1] is CellProfiler's convention for float images, which illumination functions rely on:
    the Median Filter's uint16 quantisation wraps other values and applying a function clips the
    result to [0, 1], so a float image of raw counts would come out as a constant. A per-image
    background alone works on any finite floats. A picklable callable, so Dask workers can use it.
    Unreadable files and mismatches raise ImageReadError (a ValueError) whose message names the file.
    """

    def __init__(self, shape, dtype, unit_floats: bool = False):
        self.shape = tuple(shape)
        self.dtype = str(dtype)
        self.unit_floats = unit_floats

    def __call__(self, record):
        return self.read_with_info(record)[0]

    def read_with_info(self, record):
        """(image, TiffInfo): the image and the metadata its corrected copy keeps."""
        from gpuillum.io.tiff import ImageReadError, read_tiff

        image, info = read_tiff(record.path)  # ImageReadError (one line naming the file) for any unreadable file
        if tuple(image.shape) != self.shape:
            raise ImageReadError(record.path, f"shape {tuple(image.shape)} differs from the channel's {self.shape}")
        if str(image.dtype) != self.dtype:
            raise ImageReadError(record.path, f"dtype {image.dtype} differs from the channel's {self.dtype}")
        if image.dtype.kind == "f":
            self._check_float_values(record, image)
        return image, info

    def _check_float_values(self, record, image) -> None:
        import numpy as np

        from gpuillum.io.tiff import ImageReadError

        low, high = float(np.min(image)), float(np.max(image))  # NaN if any pixel is NaN
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ImageReadError(record.path, "contains NaN or infinite pixel values")
        if self.unit_floats and not (0.0 <= low and high <= 1.0):
            raise ImageReadError(record.path, f"float pixel values span [{low:.6g}, {high:.6g}]; illumination functions "
                                 "need float images scaled to [0, 1] (CellProfiler's convention): rescale them or store integers")


def ordered_map(function, items, pool, depth: int):
    """Yield ``(item, function(item), error)`` in item order, running up to ``depth`` calls ahead in ``pool``.

    At most ``depth`` results wait in memory: the bounded queue that keeps host memory independent
    of the plate size. ``error`` is the ValueError the call raised (result None); any other
    exception propagates. Calls not yet started are cancelled when the consumer stops early.
    """
    items = list(items)
    pending: deque = deque()
    position = 0
    try:
        while position < len(items) or pending:
            while position < len(items) and len(pending) < max(1, depth):
                pending.append((items[position], pool.submit(function, items[position])))
                position += 1
            item, future = pending.popleft()
            try:
                result = future.result()
            except ValueError as error:
                yield item, None, error
            else:
                yield item, result, None
    finally:
        for _item, future in pending:
            future.cancel()
