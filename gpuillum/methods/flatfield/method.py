"""The ``flatfield`` method (alias ``basic``) of the engine: settings, scope, reduction, finish."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvalidValue
from ... import methods
from ..._checks import check_choice
from ...backend import to_numpy
from ..base import GroupInfo, Method, setting
from .estimator import STATISTICS
from .fit import load_dark_frames, model_from_stack
from .working import WORKING_SIZE, WorkingStack


@dataclass(frozen=True)
class FlatfieldSettings:
    """The flat-field method's settings (each is a ``gpuillum run --method flatfield`` option)."""

    darkfield: bool = setting(True, help="estimate a darkfield (camera offset) beside the flat field, identified by "
                                         "the images' different background levels (--no-darkfield: flat field only)")
    dark_frames: str | None = setting(None, flag="--dark-frames", metavar="DIR_OR_STACK",
                                      help="measured dark frames (a TIFF stack, .npy/.npz or a folder of TIFFs), "
                                           "averaged and used as the darkfield instead of estimating it")
    timelapse: bool = setting(False, help="a time-lapse: one model per position over time, with a per-frame baseline "
                                          "(photobleaching) subtracted: (I - D) / F - B_n + mean(B)")
    working_size: int = setting(WORKING_SIZE, metavar="PIXELS", help="longest side of the working copies the fit uses (the "
                                                            "aspect ratio is kept)")
    flatfield_statistic: str = setting("auto", choices=STATISTICS,
                                       help="auto: the mean unless the darkfield regression finds the images are "
                                            "not objects on a background, then the median; mean: robust weighted mean "
                                            "(plates); median: per-pixel median of the normalised images (dense "
                                            "content: tissue tiles, confluent or growing cultures)")
    flatfield_smoothness: float = setting(1.0, metavar="FACTOR", help="multiplies the flat field's smoothing penalty")

    def __post_init__(self):
        if isinstance(self.working_size, bool) or not isinstance(self.working_size, int) or self.working_size < 8:
            raise InvalidValue(f"working_size: expected an integer >= 8, got {self.working_size!r}")
        check_choice(self.flatfield_statistic, "flatfield_statistic", STATISTICS)
        smoothness = self.flatfield_smoothness
        if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)) or not math.isfinite(smoothness) or smoothness <= 0:
            raise InvalidValue(f"flatfield_smoothness: expected a number > 0, got {smoothness!r}")
        if self.dark_frames is not None and not str(self.dark_frames).strip():
            raise InvalidValue("dark_frames: expected a path, got an empty string")


class FlatfieldMethod(Method):
    """BaSiC-class flat field + darkfield (+ time-lapse baseline) from a group of images."""

    name = "flatfield"
    aliases = ("basic",)
    summary = "flat field + darkfield (+ time-lapse baseline) of a group of images, BaSiC's model, robust closed-form fit"
    Settings = FlatfieldSettings

    def scope(self, settings) -> str:
        return "series" if settings.timelapse else "group"

    def check(self, settings, group: GroupInfo) -> None:
        if group.dtype not in self.input_dtypes(settings):
            raise InvalidValue(f"{group.label}: dtype {group.dtype} is not supported; expected one of "
                             f"{', '.join(self.input_dtypes(settings))}")
        if settings.dark_frames is not None:
            dark = load_dark_frames(Path(settings.dark_frames))
            if tuple(dark.shape) != tuple(group.shape):
                raise InvalidValue(f"dark_frames: shape {tuple(dark.shape)} differs from {group.label}'s images {tuple(group.shape)}")

    def reduction(self, settings, group: GroupInfo, start: int = 0) -> WorkingStack:
        return WorkingStack(group.shape, settings.working_size)

    def finish(self, settings, reduction: WorkingStack, group: GroupInfo, device):
        dark = None if settings.dark_frames is None else load_dark_frames(Path(settings.dark_frames))
        with device.activate():
            model = model_from_stack(reduction, darkfield=settings.darkfield, dark_frames=dark, timelapse=settings.timelapse,
                                     statistic=settings.flatfield_statistic, smoothness=settings.flatfield_smoothness,
                                     xp=device.xp, settings=self.manifest_settings(settings)["settings"])
        return model.to(to_numpy(model.flatfield))

    def describe(self, settings) -> str:
        dark = (f"darkfield from dark frames {settings.dark_frames}" if settings.dark_frames else
                "darkfield estimated" if settings.darkfield else "no darkfield")
        statistic = "mean or median, chosen from the data" if settings.flatfield_statistic == "auto" else settings.flatfield_statistic
        parts = [dark, f"working size {settings.working_size}", f"flat field {statistic}"]
        if settings.timelapse:
            parts.insert(1, "time-lapse baseline")
        if settings.flatfield_smoothness != 1.0:
            parts.append(f"smoothness x{settings.flatfield_smoothness:g}")
        return f"{self.name}: " + ", ".join(parts)


FLATFIELD = methods.register(FlatfieldMethod())
