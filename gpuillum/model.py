"""The illumination model: a flat field, an optional darkfield and an optional per-image baseline.

Every method that estimates illumination from a group of images (CellProfiler's
CorrectIlluminationCalculate, a BaSiC-class flat + dark fit, a projection over time) finishes
into an :class:`IlluminationModel`, and every correction is ``model.apply(image)``::

    corrected = (image - darkfield) / flatfield - baseline[index] + offset

in float32 (one rounding per operation on both backends), then cast by the output dtype policy
(gpuillum.output_dtype). The parts know their units:

* ``flatfield``: dimensionless (mean 1 for gpuillum's estimators; a CellProfiler function keeps
  the scale its rescale option gave it);
* ``darkfield``, ``baseline`` and ``offset``: ``units`` = "counts" (the input's raw units) or
  "cellprofiler" (CellProfiler's scale, where 1.0 is the input dtype's maximum).

A CellProfiler function is a model with one part: Divide is a flat field, Subtract a darkfield in
CellProfiler units; ``apply`` then runs gpuillum.correct.apply, bit-identical to it. Models with
more parts are saved as one self-describing ``.npz`` (the arrays plus a JSON description,
readable with ``numpy.load`` without pickle); CellProfiler functions stay ``.npy`` files.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import check_choice, check_image
from .backend import get_array_module, is_cupy_array, same_backend, to_numpy
from .output_dtype import OUTPUT_DTYPES, OutputStats, cast_output
from .errors import InvalidType, InvalidValue

MODEL_UNITS = ("counts", "cellprofiler")
MODEL_FORMAT = "gpuillum-illumination-model"
MODEL_VERSION = 1
PARTS = ("flatfield", "darkfield", "baseline")


@dataclass(frozen=True, eq=False)
class IlluminationModel:
    """What a method estimated for one group of images, and how to correct an image with it.

    Parameters
    ----------
    flatfield : 2-D array or None
        Multiplicative shading (dimensionless); None means 1 everywhere.
    darkfield : 2-D array or None
        Additive offset in ``units``; None means 0.
    baseline : 1-D array or None
        One additive value per image of the group (in the group's order), in ``units``: a
        time-lapse's background drift; ``apply`` needs ``index`` when it is set.
    units : {"counts", "cellprofiler"}
        Units of darkfield, baseline and offset.
    method : str
        The registered method that made the model (``gpuillum methods`` lists them).
    settings : dict
        That method's settings, as recorded in the manifest.
    info : dict
        Diagnostics of the fit (JSON types), e.g. the number of images, whether the darkfield
        could be identified.
    offset : float
        A constant added after the baseline is subtracted (keeps a time-lapse in the type's range).

    Examples
    --------
    >>> model = IlluminationModel(flatfield=flat, darkfield=dark, method="flatfield")
    >>> corrected = model.apply(raw_uint16)                          # uint16, rounded and clamped
    >>> signed = model.apply(raw_uint16, output_dtype="float32")
    """

    flatfield: object = None
    darkfield: object = None
    baseline: object = None
    units: str = "counts"
    method: str = ""
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    offset: float = 0.0

    def __post_init__(self):
        check_choice(self.units, "units", MODEL_UNITS)
        if self.flatfield is None and self.darkfield is None and self.baseline is None:
            raise InvalidValue("IlluminationModel: give at least one of flatfield, darkfield, baseline")
        shapes = {tuple(part.shape) for part in (self.flatfield, self.darkfield) if part is not None}
        for name in ("flatfield", "darkfield"):
            part = getattr(self, name)
            if part is not None:
                check_image(part, name, dtypes=None, allow_nan=True)
        if len(shapes) > 1:
            raise InvalidValue(f"IlluminationModel: flatfield and darkfield shapes differ ({' vs '.join(map(str, sorted(shapes)))})")
        if self.baseline is not None and getattr(self.baseline, "ndim", None) != 1:
            raise InvalidValue(f"baseline: expected one value per image (1-D), got shape {getattr(self.baseline, 'shape', None)}")

    # -- what it is

    @property
    def shape(self) -> tuple[int, int] | None:
        """The image shape the model corrects (None for a baseline alone)."""
        part = self.flatfield if self.flatfield is not None else self.darkfield
        return None if part is None else tuple(part.shape)

    @property
    def cellprofiler_method(self) -> str | None:
        """"Divide" or "Subtract" when the model is a plain CellProfiler function, else None."""
        if self.units != "cellprofiler" or self.baseline is not None or self.offset:
            return None
        if self.darkfield is None:
            return "Divide"
        if self.flatfield is None:
            return "Subtract"
        return None

    @classmethod
    def from_function(cls, function, apply_method: str = "Divide", *, method: str = "cellprofiler", settings=None,
                      info=None) -> "IlluminationModel":
        """A CellProfiler illumination function as a model: Divide -> flat field, Subtract -> darkfield
        (both in CellProfiler's units)."""
        from .correct import APPLY_METHODS

        check_choice(apply_method, "apply_method", APPLY_METHODS)
        part = "flatfield" if apply_method == "Divide" else "darkfield"
        return cls(**{part: function}, units="cellprofiler", method=method, settings=dict(settings or {}),
                   info=dict(info or {}))

    @property
    def function(self):
        """The CellProfiler function array of a plain CellProfiler model (see cellprofiler_method)."""
        if self.cellprofiler_method is None:
            raise InvalidValue("model: not a plain CellProfiler function (it has a darkfield and a flat field, or a baseline)")
        return self.flatfield if self.cellprofiler_method == "Divide" else self.darkfield

    def to(self, like) -> "IlluminationModel":
        """The model with its arrays on ``like``'s backend and device (an array), e.g. kept resident on a GPU."""
        moved = {name: None if getattr(self, name) is None else same_backend(getattr(self, name), like) for name in PARTS}
        return dataclasses.replace(self, **moved)

    # -- applying it

    def apply(self, image, *, index: int | None = None, output_dtype: str = "same", stats: OutputStats | None = None):
        """Correct ``image`` (2-D, the model's shape and backend; see the module docstring).

        Parameters
        ----------
        image : 2-D NumPy or CuPy array (uint8, uint16, float32, float64)
        index : int, optional
            The image's position in its group, for the baseline.
        output_dtype : {"same", "float32", "signed"}
        stats : OutputStats, optional
            Counts what the cast to the output dtype loses.

        Returns
        -------
        The corrected image, on the image's backend.
        """
        from .correct import IMAGE_DTYPES, apply

        check_choice(output_dtype, "output_dtype", OUTPUT_DTYPES)
        image = check_image(image, "image", dtypes=IMAGE_DTYPES, allow_nan=True)
        simple = self.cellprofiler_method
        if simple is not None:
            return apply(image, self.function, simple, units="cellprofiler", output_dtype=output_dtype, stats=stats)
        xp = get_array_module(image)
        self._check_against(image)
        scale = np.float32(np.iinfo(image.dtype).max if self.units == "cellprofiler" and image.dtype.kind == "u" else 1)
        values = image.astype(xp.float32)
        if self.darkfield is not None:
            values = values - self.darkfield.astype(xp.float32, copy=False) * scale
        if self.flatfield is not None:
            values = values / self.flatfield.astype(xp.float32, copy=False)
        shift = np.float32(self.offset) - (self._baseline_at(index) if self.baseline is not None else np.float32(0))
        if shift:
            values = values + shift * scale
        return cast_output(values, image.dtype, output_dtype, stats=stats, source=image)

    def _baseline_at(self, index) -> np.float32:
        if index is None:
            raise InvalidValue("index: this model has a per-image baseline; give the image's position in its group")
        count = len(self.baseline)
        if not 0 <= index < count:
            raise InvalidValue(f"index: expected 0..{count - 1} (the group's images), got {index}")
        return np.float32(float(self.baseline[index]))  # one value, not the vector, leaves the device

    def _check_against(self, image) -> None:
        if self.shape is not None and self.shape != tuple(image.shape):
            raise InvalidValue(f"model: shape {self.shape} does not match the image shape {tuple(image.shape)}")
        for name in ("flatfield", "darkfield"):
            part = getattr(self, name)
            if part is not None and is_cupy_array(part) != is_cupy_array(image):
                raise InvalidType(f"model {name}: must live on the image's backend (use model.to(image))")

    # -- files

    def describe(self) -> dict:
        """The model's description as saved beside its arrays (JSON types)."""
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "units": self.units, "method": self.method,
                "settings": self.settings, "info": self.info, "offset": float(self.offset),
                "parts": [name for name in PARTS if getattr(self, name) is not None]}

    def save(self, path) -> Path:
        """Write the model as one ``.npz`` (arrays + JSON description, no pickle), atomically; returns the path."""
        from .io.atomic import atomic_write_bytes

        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise InvalidValue(f"path: a model is saved as .npz, got {str(path)!r}")
        arrays = {name: np.ascontiguousarray(to_numpy(getattr(self, name)), dtype=np.float32)
                  for name in PARTS if getattr(self, name) is not None}
        buffer = io.BytesIO()
        np.savez(buffer, model=np.array(json.dumps(self.describe(), default=str)), **arrays)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path) -> "IlluminationModel":
        """Read a model saved by :meth:`save`; a one-line ValueError naming the file otherwise."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                description = json.loads(str(data["model"]))
                arrays = {name: data[name] for name in PARTS if name in data.files}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise InvalidValue(f"{path}: not a gpuillum illumination model ({type(error).__name__}: {error})") from None
        if not isinstance(description, dict) or description.get("format") != MODEL_FORMAT:
            raise InvalidValue(f"{path}: not a gpuillum illumination model (no '{MODEL_FORMAT}' description)")
        if description.get("version", 0) > MODEL_VERSION:
            raise InvalidValue(f"{path}: model format version {description['version']} is newer than this gpuillum reads "
                             f"({MODEL_VERSION}); upgrade gpuillum")
        return cls(**arrays, units=description.get("units", "counts"), method=description.get("method", ""),
                   settings=description.get("settings") or {}, info=description.get("info") or {},
                   offset=float(description.get("offset", 0.0)))
