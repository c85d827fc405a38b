"""``fit_flatfield``: flat field, darkfield and time-lapse baseline of a group of images, as an
IlluminationModel (see gpuillum.methods.flatfield for the method and its measured accuracy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InvalidType, InvalidValue
from ..._checks import check_choice, check_image
from ...backend import get_array_module, to_numpy
from ...filters.resample import resize_bilinear
from ...model import IlluminationModel
from .estimator import STATISTICS, WorkingFit, fit_working_stack, smoothing_noise_gain
from .working import WORKING_SIZE, WorkingStack, shrink

QUALITY_BELOW = 16  # estimate the flat field's own error (two more fits) for groups smaller than this
SPLIT_HALF_FROM = 4  # from this many images by split halves; below, from the residual noise
DARK_FRAME_SUFFIXES = (".tif", ".tiff", ".npy", ".npz")


def load_dark_frames(source) -> np.ndarray:
    """The darkfield measured by dark frames (camera shutter closed), as float32 counts.

    ``source``: a 2-D array (a darkfield), a 3-D array (frames, averaged), or a path: a TIFF
    (all pages averaged), a ``.npy``/``.npz`` (2-D or 3-D array), or a folder of TIFF files
    (all averaged). Frames are averaged in float64.
    """
    if isinstance(source, (str, Path)):
        array = _read_dark_frames(Path(source))
    else:
        array = to_numpy(source)
    if not hasattr(array, "ndim") or array.ndim not in (2, 3) or array.size == 0:
        raise InvalidValue(f"dark_frames: expected a 2-D darkfield or a 3-D stack of dark frames, got {getattr(array, 'shape', type(array).__name__)}")
    if array.dtype.kind not in "uif" or not np.isfinite(array).all():
        raise InvalidValue("dark_frames: expected finite numbers (counts)")
    frames = array.reshape((-1,) + array.shape[-2:]).astype(np.float64)
    return frames.mean(axis=0).astype(np.float32)


def _read_dark_frames(path: Path) -> np.ndarray:
    import tifffile

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise InvalidValue(f"dark_frames: {path} holds no .tif/.tiff file")
        return np.stack([tifffile.imread(p).astype(np.float64) for p in files])
    if not path.is_file():
        raise InvalidValue(f"dark_frames: {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return np.asarray(tifffile.imread(path))
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if len(data.files) != 1 and "images" not in data.files:
                raise InvalidValue(f"dark_frames: {path} holds {data.files}; expected one array or 'images'")
            return data["images" if "images" in data.files else data.files[0]]
    raise InvalidValue(f"dark_frames: expected a folder or a {', '.join(DARK_FRAME_SUFFIXES)} file, got {path.name}")


def _upsample(small, shape, xp):
    return resize_bilinear(xp.asarray(small, dtype=xp.float32), tuple(shape))


def _quality(small, fit: WorkingFit, smoothness: float) -> tuple[float | None, str]:
    """An estimate of the working flat field's RMS error (percent) and how it was made (the halves
    use the statistic the whole fit used)."""
    xp = get_array_module(small)
    n = small.shape[0]
    if n >= QUALITY_BELOW:
        return None, ""
    dark = "off" if fit.darkfield is None else fit.darkfield
    if n >= SPLIT_HALF_FROM:
        halves = [fit_working_stack(small[part::2], darkfield=dark, statistic=fit.statistic, smoothness=smoothness).flatfield
                  for part in (0, 1)]
        return 100 * float(xp.sqrt(xp.mean((halves[0] - halves[1]) ** 2))) / 2, "split halves"
    levels = xp.asarray(fit.levels)[:, None, None]
    ratios = (small - (0 if fit.darkfield is None else fit.darkfield)) / xp.where(levels > 0, levels, xp.nan)
    residual = ratios - fit.flatfield[None]
    noise = 1.4826 * float(xp.nanmedian(xp.abs(residual)))
    gain = smoothing_noise_gain(fit.flatfield.shape, fit.diagnostics["smoothness"])
    return 100 * noise * gain / np.sqrt(n), "pixel noise only, a lower bound (cells that leak into the background are not counted)"


def _message(fit: WorkingFit, n: int, quality) -> str:
    parts = [f"{n} image{'s' if n != 1 else ''}"]
    if fit.darkfield_status == "estimated":
        parts.append(f"darkfield offset {fit.offset:.1f} +- {fit.offset_se:.1f} counts")
    elif fit.darkfield_status == "given":
        parts.append("darkfield from dark frames")
    elif fit.darkfield_status == "not identifiable":
        parts.append(f"darkfield not identifiable ({fit.darkfield_reason}); flat field fitted without one: "
                     "give dark frames (--dark-frames) or images of different brightness")
    if fit.statistic == "median":
        parts.append("flat field from the per-pixel median of the normalised images"
                     + (" (dense content)" if fit.statistic_reason.startswith("dense") else ""))
    if fit.diagnostics["careful"]:
        parts.append(f"fitted again by the careful schedule (the fast fit's darkfield: {fit.diagnostics['careful']})")
    if quality[0] is not None:
        parts.append(f"flat field uncertain by about {quality[0]:.2f} % RMS ({quality[1]})")
    return "flatfield: " + "; ".join(parts)


def model_from_stack(stack: WorkingStack, *, darkfield: bool = True, dark_frames=None, timelapse: bool = False,
                     statistic: str = "auto", smoothness: float = 1.0, xp=np, settings=None) -> IlluminationModel:
    """Fit the working copies of ``stack`` on ``xp`` and build the full-resolution model.

    ``dark_frames``: None or the measured darkfield (2-D, the images' shape, counts).
    """
    small = stack.stack(xp).astype(xp.float64)
    n = small.shape[0]
    dark_small = None
    if dark_frames is not None:
        dark_frames = xp.asarray(dark_frames, dtype=xp.float32)
        if tuple(dark_frames.shape) != stack.shape:
            raise InvalidValue(f"dark_frames: shape {tuple(dark_frames.shape)} differs from the images' {stack.shape}")
        dark_small = shrink(dark_frames, stack.working)
    dark_choice = dark_small if dark_small is not None else ("estimate" if darkfield else "off")
    fit = fit_working_stack(small, darkfield=dark_choice, statistic=statistic, smoothness=smoothness)
    quality = _quality(small, fit, smoothness)

    flat = _upsample(fit.flatfield, stack.shape, xp)
    flat = (flat / xp.float32(float(flat.astype(xp.float64).mean()))).astype(xp.float32)
    if dark_frames is not None:
        dark = dark_frames
    elif fit.darkfield is not None:
        dark = _upsample(fit.darkfield, stack.shape, xp)
    else:
        dark = None
    levels = np.asarray(fit.levels, dtype=np.float64)
    info = {
        "images": n,
        "working_shape": list(stack.working),
        "darkfield": fit.darkfield_status,
        "darkfield_reason": fit.darkfield_reason,
        "darkfield_offset": fit.offset,
        "darkfield_offset_se": fit.offset_se,
        "darkfield_offset_halves": fit.diagnostics["darkfield_offset_halves"],
        "darkfield_offset_sequence_halves": fit.diagnostics["darkfield_offset_sequence_halves"],
        "flatfield_statistic": fit.statistic,
        "flatfield_statistic_reason": fit.statistic_reason,
        "background_level": float(levels.mean()),
        "background_level_spread": float(levels.std() / levels.mean()) if levels.mean() > 0 else None,
        "rejected_fraction": fit.diagnostics["rejected_fraction"],
        "careful_fit": fit.diagnostics["careful"] or None,
        "flatfield_error_estimate_percent": quality[0],
        "flatfield_error_estimate_method": quality[1],
        "message": _message(fit, n, quality),
    }
    baseline = offset = None
    if timelapse:
        baseline = xp.asarray(levels.astype(np.float32))
        offset = float(levels.mean())
    return IlluminationModel(flatfield=flat, darkfield=dark, baseline=baseline, units="counts", method="flatfield",
                             settings=dict(settings or {}), info=info, offset=offset or 0.0)


def _iter_images(images):
    """2-D images from a 3-D array or an iterable of 2-D arrays."""
    if hasattr(images, "ndim"):
        if images.ndim == 2:
            yield images
            return
        if images.ndim != 3:
            raise InvalidValue(f"images: expected a 3-D stack or 2-D images, got {images.ndim}-D with shape {tuple(images.shape)}")
        yield from (images[i] for i in range(images.shape[0]))
        return
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise InvalidType(f"images: expected a 3-D array or a sequence of 2-D arrays, got {type(images).__name__}")
    yield from images


def fit_flatfield(images, *, darkfield: bool = True, dark_frames=None, timelapse: bool = False, working_size: int = WORKING_SIZE,
                  statistic: str = "auto", smoothness: float = 1.0) -> IlluminationModel:
    """Estimate the flat field, the darkfield and (for a time-lapse) the per-frame baseline.

    The BaSiC camera model ``I_n = F * (B_n + objects) + D`` fitted robustly at a small working
    resolution (aspect ratio kept), on the images' backend (NumPy, or CuPy on a GPU). The
    darkfield is identified by the spread of the images' background levels; when that spread is
    too small (every image equally bright, a single image) the model has no darkfield and
    ``model.info["darkfield"]`` says "not identifiable" with the reason, unless dark frames are
    given.

    Parameters
    ----------
    images : 3-D array (N, Y, X), or an iterable of 2-D arrays (uint8, uint16, float32, float64)
        The images of one channel (a plate, a folder of tiles, the frames of a time-lapse).
    darkfield : bool
        Estimate a darkfield (counts of the input); False fits the flat field alone.
    dark_frames : array or path, optional
        Measured dark frames (2-D darkfield, 3-D frames, a TIFF, .npy/.npz or a folder of TIFFs),
        used as the darkfield instead of estimating it.
    timelapse : bool
        Keep each image's background level as the model's baseline (photobleaching): ``apply``
        then gives ``(I - D) / F - B_n + mean(B)``.
    working_size : int
        Longest side of the working copies in pixels (96; BaSiC uses 128 x 128, which measured the same
        accuracy here at 1.7x the cost).
    statistic : {"auto", "mean", "median"}
        "mean": robust weighted mean (objects on a background: plates, cells); "median": per-pixel
        median of the level-normalised images (dense content: tissue tiles, confluent or growing
        cultures); "auto" (default): the mean unless the darkfield regression finds that the data
        contradict its model, then the median (``info["flatfield_statistic"]`` and
        ``info["flatfield_statistic_reason"]`` say which and why; the regression runs even when
        ``darkfield`` is False).
    smoothness : float
        Multiplies the flat field's smoothing penalty (1: the default, measured in the module docs).

    Returns
    -------
    IlluminationModel
        ``flatfield`` (mean 1, float32), ``darkfield`` (counts, float32, or None), ``baseline``
        (one value per image when ``timelapse``), ``info`` (diagnostics: ``images``,
        ``darkfield`` status and reason, ``darkfield_offset`` +- ``darkfield_offset_se``,
        ``darkfield_offset_halves`` (the even and the odd images' offsets), ``flatfield_statistic``,
        ``background_level_spread``, ``flatfield_error_estimate_percent`` for small groups,
        ``message`` for a run summary). Arrays live on the images' backend.

    Examples
    --------
    >>> import gpuillum as gi
    >>> model = gi.fit_flatfield(stack)                 # (N, Y, X) uint16
    >>> model.info["darkfield"], model.info["darkfield_offset"]
    ('estimated', 101.3)
    >>> corrected = model.apply(stack[0])              # uint16, (I - D) / F
    """
    check_choice(statistic, "statistic", STATISTICS)
    if not (isinstance(smoothness, (int, float)) and not isinstance(smoothness, bool) and np.isfinite(smoothness) and smoothness > 0):
        raise InvalidValue(f"smoothness: expected a number > 0, got {smoothness!r}")
    stack = WorkingStack(working_size=working_size)
    xp = np
    for index, image in enumerate(_iter_images(images)):
        if index == 0:
            check_image(image, "images[0]", dtypes=None)
            xp = get_array_module(image)
        stack.add(image)
    if stack.count == 0:
        raise InvalidValue("images: expected at least one image, got none")
    dark = None if dark_frames is None else load_dark_frames(dark_frames)
    settings = {"darkfield": bool(darkfield), "dark_frames": None if dark_frames is None else
                (str(dark_frames) if isinstance(dark_frames, (str, Path)) else "array"),
                "timelapse": bool(timelapse), "working_size": stack.working_size, "flatfield_statistic": statistic,
                "flatfield_smoothness": float(smoothness)}
    return model_from_stack(stack, darkfield=darkfield, dark_frames=dark, timelapse=timelapse, statistic=statistic,
                            smoothness=float(smoothness), xp=xp, settings=settings)
