"""The ``projection`` method: one background per time series, a projection over time, subtracted frame by frame.

The lesson's second recipe: the background of a time-lapse whose objects move is a per-pixel
statistic of the frames over time (a maximum-intensity projection for objects darker than the
background, as the lesson's polyp; a minimum or a low percentile for bright objects on a dark
background; the median resists both). Scope "series": one model per position over time (a
multi-page time-lapse, or the files of one well and site with a ``t`` group), streamed in the
engine's batches by gpuillum.filters.projection.ProjectionReducer, bit-identical for any number of
workers. The model is the projection as a darkfield in counts, so pass 2 writes
``frame - background`` through the output dtype policy: ``--output-dtype float32`` is ImageJ's
Image Calculator "Subtract create 32-bit stack" of the stack and its Z Project, ``signed`` the
lesson's int16 foreground, ``same`` ImageJ's 8/16-bit Subtract (clamped at 0: a maximum
projection leaves nothing above 0, which the run reports as clipped).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import register
from .base import GroupInfo, Method, choice_parser, setting
from ..filters.projection import STATISTICS, ProjectionReducer


@dataclass(frozen=True)
class ProjectionSettings:
    """The statistic over time (and its percentile)."""

    statistic: str | None = setting(None, metavar="|".join(STATISTICS), parse=choice_parser(STATISTICS),
                                    help="the per-pixel statistic over time that is the background: max (the lesson's; "
                                    "objects darker than the background; default), min (bright objects on a dark "
                                    "background), mean, median, percentile (with --percentile; the default when it is given)")
    percentile: float | None = setting(None, metavar="Q", help="the percentile in [0, 100] of --statistic percentile "
                                       "(numpy's linear definition)")

    def __post_init__(self):
        if self.statistic is None:
            object.__setattr__(self, "statistic", "max" if self.percentile is None else "percentile")
        ProjectionReducer(self.statistic, self.percentile)  # checks both, one line each


class ProjectionMethod(Method):
    name = "projection"
    aliases = ("projection-over-time",)
    summary = "subtract a projection over time (max, min, mean, median, percentile) from every frame of each time series"
    Settings = ProjectionSettings
    min_images = 2  # a projection of one frame is that frame

    def scope(self, settings) -> str:
        return "series"

    def describe(self, settings: ProjectionSettings) -> str:
        what = f"{settings.percentile:g}th percentile" if settings.statistic == "percentile" else settings.statistic
        return f"projection over time: the {what} of each series' frames subtracted from each frame"

    def reduction(self, settings: ProjectionSettings, group: GroupInfo, start: int = 0) -> ProjectionReducer:
        return ProjectionReducer(settings.statistic, settings.percentile, start=start)

    def finish(self, settings: ProjectionSettings, reduction: ProjectionReducer, group: GroupInfo, device):
        import numpy as np

        from ..backend import to_numpy
        from ..model import IlluminationModel

        background = to_numpy(reduction.result()).astype(np.float32)
        return IlluminationModel(darkfield=background, units="counts", method=self.name,
                                 settings=dataclasses.asdict(settings),
                                 info={"images": reduction.count, "background": f"{settings.statistic} projection over time"})

    def background(self, settings, image, model=None):
        from ..backend import same_backend

        return None if model is None or model.darkfield is None else same_backend(model.darkfield, image)


register(ProjectionMethod())
