"""Reading the images of a plate: header checks, one-line problems, bounded parallel decoding."""
from __future__ import annotations

from collections import deque


class ImageProblem(ValueError):
    """A file that cannot be used, with a one-line message naming it and the problem."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable, so a Dask worker can send it back
        return (type(self), (self.path, self.reason))


class CheckedReader:
    """``reader(record) -> image``: reads a TIFF and checks it has the channel's shape and dtype.

    A picklable callable, so Dask workers can use it. Unreadable files and mismatches raise
    ValueError (ImageReadError or ImageProblem) whose message names the file.
    """

    def __init__(self, shape, dtype):
        self.shape = tuple(shape)
        self.dtype = str(dtype)

    def __call__(self, record):
        return self.read_with_info(record)[0]

    def read_with_info(self, record):
        """(image, TiffInfo): the image and the metadata its corrected copy keeps."""
        from gpuillum.io.tiff import read_tiff

        try:
            image, info = read_tiff(record.path)
        except OSError as error:  # a file that vanished or cannot be opened
            raise ImageProblem(record.path, error.strerror or type(error).__name__) from None
        if image.ndim != 2:
            raise ImageProblem(record.path, f"expected one 2-D image, got an array of shape {tuple(image.shape)}")
        if tuple(image.shape) != self.shape:
            raise ImageProblem(record.path, f"shape {tuple(image.shape)} differs from the channel's {self.shape}")
        if str(image.dtype) != self.dtype:
            raise ImageProblem(record.path, f"dtype {image.dtype} differs from the channel's {self.dtype}")
        return image, info


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
