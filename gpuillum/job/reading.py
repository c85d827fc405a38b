"""Reading a run's images: header checks, one-line problems, stacks read a file at a time.

An image is a single-image TIFF or one plane of a multi-page stack (ImageRecord.page). Pass 1
reads the images of a batch in order, opening a stack once for its consecutive planes; pass 2
reads a whole file (every plane of a stack) because it writes the file whole.
"""
from __future__ import annotations

import itertools

import numpy as np


class CheckedReader:
    """Checks that what was read has its group's shape and dtype, and that a float image is finite
    and, with ``unit_floats``, within [0, 1].

    [0, 1] is CellProfiler's convention for float images, which its functions rely on: the Median
    Filter's uint16 quantisation wraps other values and applying a function clips the result to
    [0, 1], so a float image of raw counts would come out as a constant. Other methods take any
    finite floats. Picklable, so Dask workers can use it. A mismatch raises ImageReadError (a
    one-line error naming the file).
    """

    def __init__(self, shape, dtype, unit_floats: bool = False):
        self.shape = tuple(shape)
        self.dtype = str(dtype)
        self.unit_floats = unit_floats

    def check(self, record, image) -> None:
        from ..io.tiff import ImageReadError

        where = record.path if record.page is None else f"{record.path} (plane {record.page})"
        if tuple(image.shape) != self.shape:
            raise ImageReadError(where, f"shape {tuple(image.shape)} differs from the channel's {self.shape}")
        if str(image.dtype) != self.dtype:
            raise ImageReadError(where, f"dtype {image.dtype} differs from the channel's {self.dtype}")
        if image.dtype.kind == "f":
            low, high = float(np.min(image)), float(np.max(image))  # NaN if any pixel is NaN
            if not (np.isfinite(low) and np.isfinite(high)):
                raise ImageReadError(where, "contains NaN or infinite pixel values")
            if self.unit_floats and not (0.0 <= low and high <= 1.0):
                raise ImageReadError(where, f"float pixel values span [{low:.6g}, {high:.6g}]; illumination functions "
                                     "need float images scaled to [0, 1] (CellProfiler's convention): rescale them or "
                                     "store integers")


def read_records(records, reader: CheckedReader, on_error: str, skipped: list):
    """Yield ``(record, image)`` for ``records`` in order; a stack's consecutive planes are read with
    one opening of the file. An unreadable image raises ImageReadError, or with ``on_error="skip"``
    is appended to ``skipped`` (see :func:`read_problem`) and left out."""
    from ..io.stacks import read_planes
    from ..io.tiff import ImageReadError, read_tiff

    for (path, stacked), run in itertools.groupby(records, key=lambda record: (record.path, record.page is not None)):
        run = list(run)
        try:
            images = read_planes(path, [record.page for record in run]) if stacked else [read_tiff(run[0].path)[0]]
        except ImageReadError as error:
            if on_error != "skip":
                raise
            skipped.extend(read_problem(record, error) for record in run)
            continue
        for record, image in zip(run, images):
            try:
                reader.check(record, image)
            except ImageReadError as error:
                if on_error != "skip":
                    raise
                skipped.append(read_problem(record, error))
                continue
            yield record, image


def read_problem(record, error) -> tuple:
    """(the image's name, a Problem) for an image that could not be read: what a run lists as skipped."""
    from ..inputs.records import Problem

    return record.name, Problem(error.path, "unreadable", error.reason, left_out=False)


def upload_batch(images: list, device):
    """Stack ``images`` (NumPy) into a pinned host buffer and copy them to ``device`` in one transfer."""
    if not images:
        return []
    import cupyx

    with device.activate():
        pinned = cupyx.empty_pinned((len(images), *images[0].shape), images[0].dtype)
        for index, image in enumerate(images):
            pinned[index] = image
        on_device = device.xp.empty(pinned.shape, pinned.dtype)
        on_device.set(pinned)  # synchronous on the current stream: the pinned buffer can be dropped
        return list(on_device)
