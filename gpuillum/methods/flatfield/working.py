"""The flat-field method's group reduction: a small working-resolution copy of every image.

Each image is shrunk on its own backend with :func:`gpuillum.filters.resample.resize_bilinear`
(the anti-aliasing Gaussian and bilinear interpolation of CellProfiler's Resize, a fixed linear
map) to ``working_shape``: the longest side becomes ``working_size`` pixels and the aspect ratio is
kept (at 96, a 2160 x 2560 image becomes 81 x 96). The copies are kept in the order they were
added, and a merge appends the other partial's copies after these: the engine merges the partials
of consecutive batches in batch order, so the stack handed to the fit is the same, bit for bit,
whatever the batches and the number of workers.

Memory: 4 bytes per working pixel: 36 KiB per image at the default 96 x 96 (64 KiB at 128 x 128),
so 10,000 images hold 0.37 GB. The fit then needs about four float64 copies of the stack (the
stack, its weights, the weighted stack, temporaries): 0.3 MB per image at 96 x 96 (measured 0.53 GB
peak for 1,000 images at 128 x 128), so about 3 GB for 10,000 images; both scale with the square
of ``working_size``.
"""
from __future__ import annotations

import numpy as np

from ...errors import InvalidValue
from ..._checks import check_image, check_integer
from ...backend import get_array_module, same_backend, to_numpy
from ...filters.resample import resize_bilinear
from ..base import Reduction

INPUT_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
BYTES_PER_PIXEL = 4
WORKING_SIZE = 96  # the default longest side (accuracy measured equal to 128 on the synthetic plates and demo stacks)


def working_shape(shape, working_size: int) -> tuple[int, int]:
    """The working resolution of images of ``shape``: the longest side ``working_size`` (never
    larger than the image), the other in proportion (at least 1 pixel)."""
    rows, cols = (int(s) for s in shape)
    longest = max(rows, cols)
    if longest <= working_size:
        return rows, cols
    scale = working_size / longest
    return max(1, int(round(rows * scale))), max(1, int(round(cols * scale)))


def shrink(image, shape):
    """``image`` at ``shape`` as float32 on its backend (a float32 copy when the shape is the same)."""
    xp = get_array_module(image)
    if tuple(image.shape) == tuple(shape):
        return image.astype(xp.float32)
    return resize_bilinear(image, tuple(shape))


class WorkingStack(Reduction):
    """The working-resolution copies of a group's images, by index (see the module docstring).

    Parameters
    ----------
    shape : (rows, cols) or None
        The images' full shape (None: taken from the first image).
    working_size : int
        The longest side of the working copies, in pixels.

    Examples
    --------
    >>> stack = WorkingStack(working_size=96)
    >>> for image in images:
    ...     stack.add(image)
    >>> small = stack.stack()          # (N, h, w) float32, in the order added
    """

    def __init__(self, shape=None, working_size: int = WORKING_SIZE):
        self.working_size = check_integer(working_size, "working_size", 8)
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.images: list = []

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def working(self) -> tuple[int, int] | None:
        return None if self.shape is None else working_shape(self.shape, self.working_size)

    def add(self, image) -> "WorkingStack":
        """Shrink ``image`` (2-D, uint8/uint16/float32/float64, the group's shape) and keep it after the others."""
        image = check_image(image, "image", dtypes=INPUT_DTYPES)
        if self.shape is None:
            self.shape = tuple(image.shape)
        elif tuple(image.shape) != self.shape:
            raise InvalidValue(f"image {self.count}: shape {tuple(image.shape)} differs from the group's {self.shape}")
        self.images.append(shrink(image, self.working))
        return self

    def merge(self, other: "WorkingStack") -> "WorkingStack":
        """Append ``other``'s images (same full shape and working size), the next batch's; returns self."""
        if not isinstance(other, WorkingStack) or other.working_size != self.working_size:
            raise InvalidValue("merge: expected a WorkingStack with the same working size")
        if other.shape is not None:
            if self.shape is not None and other.shape != self.shape:
                raise InvalidValue(f"merge: image shape {other.shape} differs from {self.shape}")
            self.shape = other.shape
        like = self.images[0] if self.images else None
        self.images.extend(small if like is None else same_backend(small, like) for small in other.images)
        return self

    def to(self, device) -> "WorkingStack":
        """Move the copies to ``device`` (gpuillum.backend.Device); returns self."""
        self.images = [device.asarray(small) for small in self.images]
        return self

    def stack(self, xp=None):
        """The copies as one (N, h, w) float32 array in the order added, on ``xp`` (default: their backend)."""
        if not self.images:
            raise InvalidValue("images: the group has no image")
        xp = xp or get_array_module(self.images[0])
        return xp.stack([xp.asarray(a) for a in self.images])

    def nbytes(self) -> int:
        """Bytes held by the copies."""
        return sum(int(np.prod(small.shape)) * BYTES_PER_PIXEL for small in self.images)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["images"] = [to_numpy(small) for small in self.images]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
