"""A synthetic fluorescence plate with known illumination, for demos, tests and benchmarks.

Every image follows the usual camera model ``image = dark + flat * (background + cells)`` plus
shot and read noise, so an estimated flat field can be scored against the truth:

* cells: elliptical nuclei (nuclear stains such as DNA/DAPI/Hoechst) or larger, dimmer, irregular
  cell bodies with a brighter cortex and a dimmer nucleus (every other channel), at random
  positions, partly clustered, covering roughly 5-20 % of the field; each cell is stamped through
  a small patch and all patches are summed with one ``bincount``, so a 1080^2 field costs
  milliseconds;
* flat field, one per channel: cos^4 vignetting ``1 / (1 + (r/f)^2)^2`` around an off-centre
  optical axis, with slightly elliptical, rotated and tilted (steeper on one side) fall-off whose
  maximum sits exactly on that axis; 25-40 % lower in the corners; normalised to mean 1;
* dark field: a 100-count offset plus a faint smooth pattern (a few counts);
* noise: Poisson shot noise in electrons (drawn exactly below ``EXACT_POISSON_BELOW`` electrons,
  from its normal approximation above: same mean and variance, 5x faster) and Gaussian read noise,
  times the gain, rounded and clipped to the bit depth.

Random numbers come from generators seeded by (seed, purpose, well, site, channel), so every image
is the same whatever subset or order is generated, and a plate is byte-identical for a seed.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .._checks import check_choice
from ..errors import InvalidValue

NUCLEAR_STAINS = ("dna", "dapi", "hoechst", "nuc", "h2b")
EXACT_POISSON_BELOW = 50.0
PIXEL_SIZE_UM = 0.65  # a 20x objective on a 6.5 um-pixel sCMOS camera
BIT_DEPTHS = (8, 10, 12, 14, 16)

# Levels in counts of a 16-bit camera at gain 1 count per electron (scaled for other bit depths).
DARK_OFFSET = 100.0
DARK_PATTERN_COUNTS = 3.0
BACKGROUND = {"nuclear": 400.0, "cytoplasm": 700.0}
CELL_BRIGHTNESS = {"nuclear": 5000.0, "cytoplasm": 1800.0}
READ_NOISE_ELECTRONS = 2.0
GAIN = 1.0  # counts per electron at 16 bits

# Cell geometry in pixels (fixed pixel size: a larger field holds more cells, as on a microscope).
NUCLEUS_RADIUS = (7.0, 12.0)
BODY_TO_NUCLEUS = (1.5, 2.1)
BODY_HARMONICS = (0.15, 0.12, 0.06, 0.04)  # largest relative amplitude of the outline's 2nd..5th harmonics
COVERAGE = (0.10, 0.20)  # target fraction of the field inside cell bodies, before overlaps
CLUSTER_FRACTION = 0.4
CLUSTER_SPREAD = 45.0

# Standard plate formats (rows, columns), smallest first: requested wells use the first that holds them.
PLATE_FORMATS = ((8, 12), (16, 24), (32, 48))

# Random-stream purposes (the second entropy word of every generator).
_FLAT, _DARK, _SITE, _IMAGE = 1, 2, 3, 4


class ImageKey(NamedTuple):
    """One image of the plate: well like "B03", site from 1, channel name."""

    well: str
    site: int
    channel: str


def image_relpath(plate: str, key: ImageKey) -> str:
    """The "gpuillum" layout: ``<plate>/<well>_s<site>_<channel>.tif``."""
    return f"{plate}/{key.well}_s{key.site}_{key.channel}.tif"


def is_nuclear(channel: str) -> bool:
    """True for stains that show nuclei (by name: DNA, DAPI, Hoechst, ...)."""
    name = channel.lower()
    return any(word in name for word in NUCLEAR_STAINS)


def _code(text: str) -> int:
    """A non-negative integer naming ``text`` in a seed (stable across runs and platforms)."""
    return int.from_bytes(text.encode("utf-8"), "big")


@dataclass(frozen=True)
class FlatParams:
    """The vignetting of one channel, in pixel coordinates (``centre_yx`` is where the flat peaks)."""

    centre_yx: tuple[float, float]
    focal: float
    axis_ratio: float
    angle: float
    tilt: float
    tilt_angle: float
    corner_falloff: float


def _vignetting(params: FlatParams, shape) -> np.ndarray:
    """cos^4 fall-off around ``centre_yx``, peak 1, float64."""
    h, w = shape
    y = np.arange(h, dtype=np.float64)[:, None] - params.centre_yx[0]
    x = np.arange(w, dtype=np.float64)[None, :] - params.centre_yx[1]
    return _cos4(y, x, params.focal, params)


def _cos4(y, x, focal, params: FlatParams):
    c, s = math.cos(params.angle), math.sin(params.angle)
    u = y * c + x * s
    v = (-y * s + x * c) * params.axis_ratio
    radius = np.sqrt(u * u + v * v)
    # The tilt makes the fall-off steeper on one side; |tilt| < 1 and axis_ratio >= 1 keep the
    # effective radius positive away from the centre, so the peak stays on the axis.
    radius = radius + params.tilt * (y * math.sin(params.tilt_angle) + x * math.cos(params.tilt_angle))
    return 1.0 / (1.0 + (radius / focal) ** 2) ** 2


def _draw_flat_params(rng: np.random.Generator, shape) -> FlatParams:
    h, w = shape
    short = min(h, w)
    direction = rng.uniform(0, 2 * math.pi)
    offset = rng.uniform(0.08, 0.15) * short
    centre = ((h - 1) / 2 + offset * math.sin(direction), (w - 1) / 2 + offset * math.cos(direction))
    partial = FlatParams(
        centre_yx=centre,
        focal=1.0,
        axis_ratio=float(rng.uniform(1.0, 1.2)),
        angle=float(rng.uniform(0, math.pi)),
        tilt=float(rng.uniform(0.08, 0.18)),
        tilt_angle=float(rng.uniform(0, 2 * math.pi)),
        corner_falloff=float(rng.uniform(0.25, 0.40)),
    )
    corners_y = np.array([0.0, 0.0, h - 1.0, h - 1.0]) - centre[0]
    corners_x = np.array([0.0, w - 1.0, 0.0, w - 1.0]) - centre[1]

    def falloff(focal):
        return 1.0 - float(np.mean(_cos4(corners_y, corners_x, focal, partial)))

    low, high = 1e-3 * short, 1e3 * short  # fall-off decreases as the focal length grows
    for _ in range(100):
        mid = math.sqrt(low * high)
        if falloff(mid) > partial.corner_falloff:
            low = mid
        else:
            high = mid
    return dataclasses.replace(partial, focal=math.sqrt(low * high))


@dataclass
class _SiteCells:
    """Cell geometry of one site: body and nucleus of every cell, rendered per channel."""

    inside: np.ndarray  # (n, P, P) which patch pixels fall inside the image
    index: np.ndarray  # flat image index of each of those pixels
    body: np.ndarray  # (n, P, P) body profile, 0..1 with a brighter cortex
    nucleus: np.ndarray  # (n, P, P) nucleus profile, 0..1
    body_brightness: np.ndarray  # (n,)
    nucleus_brightness: np.ndarray


def _sigmoid_edge(rho, width):
    """1 inside (rho < 1), 0 outside, with a soft edge of relative ``width``."""
    return 0.5 * (1.0 - np.tanh((rho - 1.0) / (2.0 * width)))


def _draw_cells(rng: np.random.Generator, shape, coverage=COVERAGE) -> _SiteCells:
    """The cells of one site: about ``coverage`` (a (low, high) range drawn from) of the field inside cell bodies."""
    h, w = shape
    mean_nucleus = sum(NUCLEUS_RADIUS) / 2
    mean_body_area = math.pi * (mean_nucleus * sum(BODY_TO_NUCLEUS) / 2) ** 2
    n = max(1, int(round(rng.uniform(*coverage) * h * w / mean_body_area)))

    # Positions: a share of the cells gathered around a few cluster centres, the rest uniform.
    n_clustered = int(rng.binomial(n, CLUSTER_FRACTION))
    n_clusters = max(1, int(rng.poisson(max(1.0, h * w / 512**2 * 3))))
    centres = rng.uniform((0, 0), (h, w), size=(n_clusters, 2))
    members = centres[rng.integers(0, n_clusters, n_clustered)] + rng.normal(0, CLUSTER_SPREAD, (n_clustered, 2))
    uniform = rng.uniform((0, 0), (h, w), size=(n - n_clustered, 2))
    yx = np.concatenate([members, uniform]) % (h, w)

    nucleus_r = rng.uniform(*NUCLEUS_RADIUS, size=n)
    nucleus_ratio = rng.uniform(1.0, 1.5, size=n)
    nucleus_angle = rng.uniform(0, math.pi, size=n)
    body_r = nucleus_r * rng.uniform(*BODY_TO_NUCLEUS, size=n)
    harmonics = rng.uniform(0, 1, size=(n, len(BODY_HARMONICS))) * np.array(BODY_HARMONICS)
    phases = rng.uniform(0, 2 * math.pi, size=(n, len(BODY_HARMONICS)))
    nucleus_shift = rng.normal(0, 0.25, size=(n, 2)) * (body_r - nucleus_r)[:, None]
    body_brightness = rng.lognormal(0.0, 0.3, size=n)
    nucleus_brightness = rng.lognormal(0.0, 0.35, size=n)

    half = int(math.ceil(float(body_r.max()) * (1 + harmonics.sum(axis=1).max()) + 3))
    offsets = np.arange(-half, half + 1)
    base = np.floor(yx).astype(np.int64)
    frac = (yx - base).astype(np.float32)

    def per_cell(values):  # (n,) parameters broadcast against (n, P, P) patches, in float32
        return np.asarray(values, dtype=np.float32)[:, None, None]

    dy = offsets.astype(np.float32)[None, :, None] - per_cell(frac[:, 0])  # distance to the cell centre
    dx = offsets.astype(np.float32)[None, None, :] - per_cell(frac[:, 1])
    radius = np.sqrt(dy * dy + dx * dx)

    # Outline radius R(phi) = body_r * (1 + sum_k h_k cos(k phi - p_k)), with e^{ik phi} as powers
    # of (dx + i dy) / r (no arctan or cos per pixel).
    unit = (dx + 1j * dy) / np.maximum(radius, np.float32(1e-6))
    power = unit * unit
    wobble = np.ones(radius.shape, dtype=np.float32)
    for order in range(len(BODY_HARMONICS)):
        rotation = per_cell(harmonics[:, order]) * np.exp(-1j * per_cell(phases[:, order])).astype(np.complex64)
        wobble += (power * rotation).real
        power = power * unit
    rho_body = radius / (per_cell(body_r) * wobble)
    body = _sigmoid_edge(rho_body, np.float32(0.08)) * (np.float32(0.55) + np.float32(0.45) * np.minimum(rho_body, 1) ** 2)

    ny = dy - per_cell(nucleus_shift[:, 0])
    nx = dx - per_cell(nucleus_shift[:, 1])
    c, s = per_cell(np.cos(nucleus_angle)), per_cell(np.sin(nucleus_angle))
    u = (ny * c + nx * s) * per_cell(nucleus_ratio)
    v = nx * c - ny * s
    nucleus = _sigmoid_edge(np.sqrt(u * u + v * v) / per_cell(nucleus_r), np.float32(0.06))

    rows = base[:, 0, None, None] + offsets[None, :, None]
    cols = base[:, 1, None, None] + offsets[None, None, :]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return _SiteCells(
        inside=inside,
        index=np.broadcast_to(rows * w + cols, inside.shape)[inside],
        body=body.astype(np.float32),
        nucleus=nucleus.astype(np.float32),
        body_brightness=body_brightness.astype(np.float32),
        nucleus_brightness=nucleus_brightness.astype(np.float32),
    )


def _stamp(cells: _SiteCells, values: np.ndarray, shape) -> np.ndarray:
    """Sum per-cell patches ``values`` (n, P, P) into a float32 image (patches cut at the border)."""
    h, w = shape
    return np.bincount(cells.index, weights=values[cells.inside], minlength=h * w).reshape(h, w).astype(np.float32)


def add_camera_noise(electrons: np.ndarray, rng: np.random.Generator, *, read_noise: float = READ_NOISE_ELECTRONS):
    """Shot noise and Gaussian read noise for a float image of expected electrons, float32 out.

    Shot noise is exact Poisson (plus a separate read-noise draw) where the expectation is below
    ``EXACT_POISSON_BELOW``; elsewhere shot and read noise are drawn together as the normal
    N(lambda, lambda + read_noise^2): same mean and variance, one draw, 5x faster than Poisson.
    """
    expected = np.asarray(electrons, dtype=np.float32)
    read_variance = np.float32(read_noise) ** 2
    noisy = expected + np.sqrt(expected + read_variance) * rng.standard_normal(expected.shape, dtype=np.float32)
    low = expected < EXACT_POISSON_BELOW
    if low.any():
        count = int(low.sum())
        noisy[low] = rng.poisson(expected[low]) + np.float32(read_noise) * rng.standard_normal(count, dtype=np.float32)
    return noisy


def _row_index(letters: str) -> int:
    """0-based row of well-row letters: "A" -> 0, "Z" -> 25, "AA" -> 26."""
    index = 0
    for letter in letters.upper():
        if not "A" <= letter <= "Z":
            raise InvalidValue(f"rows: expected well-row letters such as 'B' or 'AA', got {letters!r}")
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def _row_letters(index: int) -> str:
    letters, number = "", index + 1
    while number:
        number, remainder = divmod(number - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _place_wells(positions: list[tuple[int, int]], height: int, width: int) -> list[int] | None:
    """Plate positions (row * width + col) for the requested (row, 0-based col) pairs on a height x width
    plate, or None if they do not fit. Pairs inside the plate keep their place; a column past the
    last wraps onto the following rows, to the first place no other well takes."""
    if len(positions) > height * width or any(row >= height for row, _ in positions):
        return None
    taken = {row * width + col for row, col in positions if col < width}
    placed = []
    for row, col in positions:
        place = row * width + col
        if col >= width:
            while place in taken:
                place += 1
            taken.add(place)
        if place >= height * width:
            return None
        placed.append(place)
    return placed


def well_names(rows: Sequence[str], cols: Sequence[int]) -> tuple[str, ...]:
    """Names of the wells rows x cols ("B03"), all valid on the smallest standard plate (96, 384,
    1536 wells) that holds them, in plate order.

    A requested well that exists on that plate keeps its name; one past the last column wraps onto
    the next row (B13 on a 96-well plate becomes C01, or the next free well), so any number of wells
    up to 1536 gets real, unique names. The same rows and cols always give the same names.
    """
    if any(int(col) < 1 for col in cols):
        raise InvalidValue(f"cols: expected column numbers >= 1, got {tuple(cols)}")
    positions = [(_row_index(row), int(col) - 1) for row in rows for col in cols]
    for height, width in PLATE_FORMATS:
        placed = _place_wells(positions, height, width)
        if placed is not None:
            digits = max(2, len(str(width)))
            return tuple(f"{_row_letters(p // width)}{p % width + 1:0{digits}d}" for p in sorted(placed))
    largest = PLATE_FORMATS[-1][0] * PLATE_FORMATS[-1][1]
    raise InvalidValue(f"rows, cols: {len(positions)} wells from rows {''.join(rows)} do not fit a {largest}-well plate")


@dataclass
class SyntheticModel:
    """Everything that defines a synthetic plate; renders any image of it on demand."""

    plate: str = "DEMO"
    rows: Sequence[str] = "BC"
    cols: Sequence[int] = (3, 4, 5)
    sites: int = 2
    channels: Sequence[str] = ("DNA", "Actin")
    shape: tuple[int, int] = (512, 512)
    seed: int = 0
    bit_depth: int = 16
    _fields: dict = field(default_factory=dict, repr=False)  # cached flat and dark fields

    def __post_init__(self):
        self.rows = tuple(str(r) for r in self.rows)
        self.cols = tuple(int(c) for c in self.cols)
        self.channels = tuple(str(c) for c in self.channels)
        self.shape = tuple(int(s) for s in self.shape)
        check_choice(self.bit_depth, "bit_depth", BIT_DEPTHS)
        if len(self.shape) != 2 or min(self.shape) < 16:
            raise InvalidValue(f"shape: expected (height, width) of at least 16 pixels each, got {self.shape}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InvalidValue(f"seed: expected an integer >= 0, got {self.seed!r}")
        if int(self.sites) < 1:
            raise InvalidValue(f"sites: expected an integer >= 1, got {self.sites}")
        if not self.rows or not self.cols or not self.channels:
            raise InvalidValue("rows, cols and channels: expected at least one of each")
        if len(set(self.channels)) != len(self.channels):
            raise InvalidValue(f"channels: names must be unique, got {self.channels}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    @property
    def scale(self) -> float:
        """Counts at this bit depth per count of the 16-bit model (same electrons, coarser ADC)."""
        return (2**self.bit_depth - 1) / 65535.0

    @property
    def wells(self) -> tuple[str, ...]:
        return well_names(self.rows, self.cols)

    def _channel_index(self, channel: str) -> int:
        return self.channels.index(channel)

    def flat_params(self, channel: str) -> FlatParams:
        rng = np.random.default_rng([self.seed, _FLAT, self._channel_index(channel)])
        return _draw_flat_params(rng, self.shape)

    def flat(self, channel: str) -> np.ndarray:
        """The true flat field of ``channel``: float32, mean 1, peak at ``flat_params().centre_yx``."""
        return self._cached_flat(channel).copy()

    def dark(self, channel: str) -> np.ndarray:
        """The true dark field of ``channel`` in counts at this bit depth, float32."""
        return self._cached_dark(channel).copy()

    def _cached_flat(self, channel: str) -> np.ndarray:
        if ("flat", channel) not in self._fields:
            vignette = _vignetting(self.flat_params(channel), self.shape)
            self._fields["flat", channel] = (vignette / vignette.mean()).astype(np.float32)
        return self._fields["flat", channel]

    def _cached_dark(self, channel: str) -> np.ndarray:
        if ("dark", channel) not in self._fields:
            self._fields["dark", channel] = self._make_dark(channel)
        return self._fields["dark", channel]

    def _make_dark(self, channel: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _DARK, self._channel_index(channel)])
        h, w = self.shape
        y = np.linspace(0.0, 1.0, h)[:, None]
        x = np.linspace(0.0, 1.0, w)[None, :]
        pattern = np.zeros(self.shape)
        for _ in range(2):
            fy, fx = rng.uniform(-1.5, 1.5, size=2)
            pattern += np.cos(2 * math.pi * (fy * y + fx * x) + rng.uniform(0, 2 * math.pi))
        pattern *= DARK_PATTERN_COUNTS / max(np.abs(pattern).max(), 1e-12)
        return ((DARK_OFFSET + pattern) * self.scale).astype(np.float32)

    def _site_rng(self, well: str, site: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SITE, _code(well), site])

    def _image_rng(self, key: ImageKey) -> np.random.Generator:
        return np.random.default_rng([self.seed, _IMAGE, _code(key.well), key.site, self._channel_index(key.channel)])

    def _cell_signal(self, cells: _SiteCells, channel: str) -> np.ndarray:
        """Specimen signal (background excluded) in 16-bit-model counts before vignetting."""
        kind = "nuclear" if is_nuclear(channel) else "cytoplasm"
        if kind == "nuclear":
            values = cells.nucleus * cells.nucleus_brightness[:, None, None]
        else:
            values = cells.body * (1.0 - 0.4 * cells.nucleus) * cells.body_brightness[:, None, None]
        return np.float32(CELL_BRIGHTNESS[kind]) * _stamp(cells, values, self.shape)

    def _render(self, key: ImageKey, cells: _SiteCells, *, noise: bool = True) -> np.ndarray:
        kind = "nuclear" if is_nuclear(key.channel) else "cytoplasm"
        rng = self._image_rng(key)
        staining = np.float32(rng.uniform(0.9, 1.1))  # well-to-well staining and exposure variation
        specimen = np.float32(BACKGROUND[kind]) + self._cell_signal(cells, key.channel) * staining
        electrons = self._cached_flat(key.channel) * specimen / np.float32(GAIN)
        counts_per_electron = np.float32(GAIN * self.scale)
        dark = self._cached_dark(key.channel)
        if not noise:
            return dark + electrons * counts_per_electron
        counts = dark + add_camera_noise(electrons, rng) * counts_per_electron
        top = 2**self.bit_depth - 1
        return np.clip(np.rint(counts), 0, top).astype(self.dtype)

    def site_images(self, well: str, site: int, *, noise: bool = True) -> dict[str, np.ndarray]:
        """Every channel of one site (the cells are drawn once and shared by the channels).

        ``noise=False`` gives the float32 expectation ``dark + flat * (background + cells)``.
        """
        cells = _draw_cells(self._site_rng(well, site), self.shape)
        return {ch: self._render(ImageKey(well, site, ch), cells, noise=noise) for ch in self.channels}

    def cell_signal(self, well: str, site: int, channel: str) -> np.ndarray:
        """The noise-free specimen signal of one image before vignetting (for coverage checks)."""
        return self._cell_signal(_draw_cells(self._site_rng(well, site), self.shape), channel)

    def describe(self) -> dict:
        """The parameters as JSON-ready values (written to truth.json)."""
        channels = {}
        for ch in self.channels:
            params = self.flat_params(ch)
            flat = self.flat(ch)
            kind = "nuclear" if is_nuclear(ch) else "cytoplasm"
            channels[ch] = {
                "stain": kind,
                "flat": {**dataclasses.asdict(params), "centre_yx": list(params.centre_yx), "max": float(flat.max()),
                         "min": float(flat.min())},
                "dark_offset": DARK_OFFSET * self.scale,
                "dark_pattern_amplitude": DARK_PATTERN_COUNTS * self.scale,
                "background": BACKGROUND[kind] * self.scale,
                "cell_brightness": CELL_BRIGHTNESS[kind] * self.scale,
            }
        return {
            "model": "image = dark + flat * (background + cells), Poisson shot noise + Gaussian read noise",
            "plate": self.plate, "rows": list(self.rows), "cols": list(self.cols), "wells": list(self.wells),
            "sites": self.sites,
            "shape": list(self.shape), "seed": self.seed, "bit_depth": self.bit_depth, "dtype": self.dtype.name,
            "gain_counts_per_electron": GAIN * self.scale, "read_noise_electrons": READ_NOISE_ELECTRONS,
            "exact_poisson_below_electrons": EXACT_POISSON_BELOW, "pixel_size_um": PIXEL_SIZE_UM,
            "channels": channels,
        }


def make_plate_images(*, plate="DEMO", rows="BC", cols=(3, 4, 5), sites=2, channels=("DNA", "Actin"),
                      shape=(512, 512), seed=0, bit_depth=16) -> Iterator[tuple[ImageKey, np.ndarray]]:
    """Yield ``(ImageKey, image)`` for every image of a synthetic plate, in memory (for benchmarks).

    Same images as :func:`make_synthetic_plate` writes, in the order well, site, channel. The truth
    is available from ``SyntheticModel(...).flat(channel)`` / ``.dark(channel)``.
    """
    model = SyntheticModel(plate, rows, cols, sites, channels, shape, seed, bit_depth)
    for well in model.wells:
        for site in range(1, model.sites + 1):
            for channel, image in model.site_images(well, site).items():
                yield ImageKey(well, site, channel), image


@dataclass(frozen=True)
class SyntheticPlate:
    """What :func:`make_synthetic_plate` wrote: the images and the ground truth."""

    out_dir: Path
    plate: str
    shape: tuple[int, int]
    dtype: str
    bit_depth: int
    seed: int
    channels: tuple[str, ...]
    images: tuple[Path, ...]
    keys: tuple[ImageKey, ...]
    flat_paths: dict[str, Path]
    dark_paths: dict[str, Path]
    truth_json: Path

    @property
    def plate_dir(self) -> Path:
        return self.out_dir / self.plate

    def image_path(self, well: str, site: int, channel: str) -> Path:
        return self.out_dir / image_relpath(self.plate, ImageKey(well, site, channel))

    def flat(self, channel: str) -> np.ndarray:
        return np.load(self.flat_paths[channel])

    def dark(self, channel: str) -> np.ndarray:
        return np.load(self.dark_paths[channel])


def _tiff_template(image: np.ndarray) -> "TiffInfo":
    """Header that ``write_tiff`` copies: the pixel size as a resolution tag, horizontal predictor."""
    from ..io.tiff import TiffInfo

    pixels_per_cm = (round(1e4 / PIXEL_SIZE_UM * 1000), 1000)
    return TiffInfo(shape=image.shape, dtype=image.dtype.name, compression="zlib", predictor=2,
                    resolution=(pixels_per_cm[0] / 1000,) * 2, resolution_unit=3, photometric="minisblack",
                    ome_xml=None, description=None, software=None, n_pages=1,
                    bits_per_sample=image.dtype.itemsize * 8, resolution_rational=(pixels_per_cm, pixels_per_cm))


def make_synthetic_plate(out_dir, *, plate="DEMO", rows="BC", cols=(3, 4, 5), sites=2, channels=("DNA", "Actin"),
                         shape=(512, 512), seed=0, compression="zlib", bit_depth=16) -> SyntheticPlate:
    """Write a synthetic plate in the "gpuillum" layout plus its ground truth; return what was written.

    Images: ``out_dir/<plate>/<well>_s<site>_<channel>.tif`` (uint16, or uint8 for 8 bits; zlib and a
    resolution tag by default). Truth: ``out_dir/truth/<plate>_flat_<channel>.npy`` (float32, mean 1),
    ``<plate>_dark_<channel>.npy`` (counts) and ``truth.json`` (every parameter).
    """
    from ..io.atomic import atomic_save_npy, atomic_write_bytes
    from ..io.tiff import write_tiff

    model = SyntheticModel(plate, rows, cols, sites, channels, shape, seed, bit_depth)
    out_dir = Path(out_dir)
    (out_dir / plate).mkdir(parents=True, exist_ok=True)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)

    keys, paths = [], []
    for key, image in make_plate_images(plate=plate, rows=model.rows, cols=model.cols, sites=model.sites,
                                        channels=model.channels, shape=model.shape, seed=seed,
                                        bit_depth=bit_depth):
        path = out_dir / image_relpath(plate, key)
        write_tiff(path, image, like=_tiff_template(image), compression=compression)
        keys.append(key)
        paths.append(path)

    flat_paths, dark_paths = {}, {}
    for ch in model.channels:
        flat_paths[ch] = truth_dir / f"{plate}_flat_{ch}.npy"
        dark_paths[ch] = truth_dir / f"{plate}_dark_{ch}.npy"
        atomic_save_npy(flat_paths[ch], model.flat(ch))
        atomic_save_npy(dark_paths[ch], model.dark(ch))
    description = model.describe()
    description["images"] = [image_relpath(plate, k) for k in keys]
    description["truth"] = {ch: {"flat": flat_paths[ch].name, "dark": dark_paths[ch].name} for ch in model.channels}
    truth_json = truth_dir / "truth.json"
    atomic_write_bytes(truth_json, (json.dumps(description, indent=2) + "\n").encode())
    return SyntheticPlate(
        out_dir=out_dir, plate=plate, shape=model.shape, dtype=model.dtype.name, bit_depth=bit_depth, seed=seed,
        channels=model.channels, images=tuple(paths), keys=tuple(keys), flat_paths=flat_paths,
        dark_paths=dark_paths, truth_json=truth_json,
    )
