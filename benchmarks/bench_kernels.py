"""Kernel benchmarks: every gpuillum kernel against its CPU and GPU peers, in one run.

Usage::

    python benchmarks/bench_kernels.py                 # CPU: 1080^2 and 2160^2, radii 5..250
    python benchmarks/bench_kernels.py --device gpu    # CuPy path + cupyx / cuCIM peers
    python benchmarks/bench_kernels.py --quick         # small sizes, a smoke test

Inputs are 12-bit uint16 fields (vignetting, cells, Poisson noise); the ``dtype float32`` median
rows take the same field divided by 4095 (scaled to [0, 1]). Each entry reports the median
of repeated runs; a peer that would take longer than ``--peer-budget`` seconds on the full image is
timed on a centred crop and scaled by the pixel ratio (marked ``extrapolated_from``). Ratios are
peer time / gpuillum time against the best (fastest) peer. Results go to
benchmarks/results/kernels-<device>-<date>.json with a machine description.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpuillum as gi  # noqa: E402
from benchmarks.common import machine_description, time_call, write_results  # noqa: E402


def test_image(size: int, seed: int = 0, background: float = 400.0) -> np.ndarray:
    """A 12-bit vignetted fluorescence-like field with cells and Poisson noise (uint16).

    ``background`` sets the field's level (counts above a 100-count offset at the brightest point);
    histogram medians such as skimage's rank median slow down as it rises, gpuillum's do not.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    flat = np.exp(-((x - 0.55) ** 2 + (y - 0.45) ** 2) / 0.35)
    cells = np.zeros((size, size), np.float32)
    n = int(size * size / 900)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    cells[ys, xs] = rng.uniform(800, 2400, n)
    import scipy.ndimage as ndi

    cells = ndi.gaussian_filter(cells, 3.0) * 25.0
    expected = 100 + flat * (background + cells)
    return np.clip(rng.poisson(expected), 0, 4095).astype(np.uint16)


class Case:
    """One measurement: a kernel call on an image and the peers that compute the same thing."""

    def __init__(self, kernel: str, params: dict, ours, peers: dict):
        self.kernel, self.params, self.ours, self.peers = kernel, params, ours, peers


def timed(fn, image, budget: float, repeats: int, crop_min: int = 256) -> dict:
    """Time fn(image); if one run would exceed ``budget`` s, time a centred crop and scale by area."""
    probe_size = min(image.shape[0], max(crop_min, image.shape[0] // 8))
    probe = _crop(image, probe_size)
    t0 = time.perf_counter()
    fn(probe)
    probe_s = time.perf_counter() - t0
    estimate = probe_s * image.size / probe.size
    if estimate <= budget:
        result = time_call(lambda: fn(image), repeats=repeats, warmup=0, max_seconds=budget * 2)
        return result
    # find the largest crop that fits the budget (area scaling), at least the probe
    side = int(min(image.shape[0], max(probe_size, image.shape[0] * math.sqrt(budget / estimate))))
    crop = _crop(image, side)
    result = time_call(lambda: fn(crop), repeats=1, warmup=0)
    scale = image.size / crop.size
    return {
        "median_s": result["median_s"] * scale,
        "min_s": result["min_s"] * scale,
        "runs": result["runs"],
        "extrapolated_from": list(crop.shape),
    }


def _crop(image, side: int):
    h, w = image.shape
    y0, x0 = (h - side) // 2, (w - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side]


def cpu_peers():
    """Peer implementations available on this machine, by kernel."""
    import scipy.ndimage as ndi

    peers = {}
    try:
        import skimage.filters.rank as rank
        import skimage.morphology as skm
    except ImportError:
        rank = skm = None
    try:
        import centrosome.cpmorphology as cpm
        import centrosome.smooth as cps
    except ImportError:
        cpm = cps = None

    def median(r, fp):
        out = {}
        if rank is not None:
            se = skm.disk(r) if fp == "disk" else np.ones((2 * r + 1,) * 2, bool)
            out["skimage.rank.median (CellProfiler path)"] = lambda im: rank.median(im, footprint=se)
        se = _footprint(r, fp)
        out["scipy.ndimage.median_filter"] = lambda im: ndi.median_filter(im, footprint=se)
        return out

    def opening(r, fp):
        out = {}
        if fp == "square":
            out["scipy.ndimage.grey_opening(size)"] = lambda im: ndi.grey_opening(im, size=(2 * r + 1,) * 2)
            if skm is not None:
                se = skm.footprint_rectangle((2 * r + 1,) * 2, decomposition="separable")
                out["skimage.opening(separable)"] = lambda im: skm.opening(im, se)
        else:
            if skm is not None:
                for dec in ("sequence", "crosses"):
                    se = skm.disk(r, decomposition=dec)
                    out[f"skimage.opening(disk {dec}, approx.)"] = lambda im, se=se: skm.opening(im, se)
                exact = skm.disk(r)
                out["skimage.opening(disk exact)"] = lambda im: skm.opening(im, exact)
        return out

    def tophat(r, fp):
        out = {}
        if skm is not None and fp == "disk":
            for dec in ("sequence", "crosses"):
                se = skm.disk(r, decomposition=dec)
                out[f"skimage.white_tophat(disk {dec}, approx.)"] = lambda im, se=se: skm.white_tophat(im, se)
        if fp == "square":
            out["scipy.ndimage.white_tophat(size)"] = lambda im: ndi.white_tophat(im, size=(2 * r + 1,) * 2)
        return out

    def block_minimum(b):
        if cpm is None:
            return {}

        def cp_block(im):
            labels, indexes = cpm.block(im.shape, (b, b))
            minima = cpm.fixup_scipy_ndimage_result(ndi.minimum(im, labels, indexes))
            return minima[labels]

        return {"centrosome block + ndimage.minimum (CellProfiler Background)": cp_block}

    def fit(degree, robust):
        if cps is None or degree != 2 or robust:
            return {}
        return {"centrosome.smooth.fit_polynomial (CellProfiler)": lambda im: cps.fit_polynomial(im, np.ones(im.shape, bool))}

    def gaussian(sigma):
        out = {"scipy.ndimage.gaussian_filter (one pass, not normalised)": lambda im: ndi.gaussian_filter(im, sigma, mode="constant")}
        if cps is not None:
            def cp_gaussian(im):
                image = im.astype(np.float32)
                return cps.smooth_with_function_and_mask(image, lambda x: ndi.gaussian_filter(x, sigma, mode="constant", cval=0),
                                                         np.ones(im.shape, bool))
            out["centrosome smooth_with_function_and_mask (CellProfiler Gaussian)"] = cp_gaussian
        return out

    peers.update(median=median, opening=opening, tophat=tophat, block_minimum=block_minimum, fit=fit, gaussian=gaussian)
    return peers


def gpu_peers():
    """cupyx.scipy.ndimage and cuCIM peers, by kernel (empty entries when absent)."""
    import cupy
    import cupyx.scipy.ndimage as cndi

    try:
        import cucim.skimage.filters as cfilters
        import cucim.skimage.morphology as cmorph
    except ImportError:
        cfilters = cmorph = None

    def median(r, fp):
        se = cupy.asarray(_footprint(r, fp))
        out = {"cupyx.median_filter": lambda im: cndi.median_filter(im, footprint=se)}
        if cfilters is not None:
            out["cucim.filters.median"] = lambda im: cfilters.median(im, footprint=se)
        return out

    def opening(r, fp):
        if fp == "square":
            out = {"cupyx.grey_opening(size)": lambda im: cndi.grey_opening(im, size=(2 * r + 1,) * 2)}
        else:
            se = cupy.asarray(_footprint(r, fp))
            out = {"cupyx.grey_opening(footprint)": lambda im: cndi.grey_opening(im, footprint=se)}
            if cmorph is not None:
                dse = cmorph.disk(r, decomposition="sequence")
                out["cucim.opening(disk sequence, approx.)"] = lambda im: cmorph.opening(im, dse)
        return out

    def tophat(r, fp):
        return {}

    def block_minimum(b):
        return {}

    def fit(degree, robust):
        return {}

    def gaussian(sigma):
        return {"cupyx.gaussian_filter": lambda im: cndi.gaussian_filter(im, sigma, mode="constant")}

    return dict(median=median, opening=opening, tophat=tophat, block_minimum=block_minimum, fit=fit, gaussian=gaussian)


def _footprint(r, fp):
    from gpuillum.filters.footprints import footprint_array

    return footprint_array(r, fp)


def build_cases(sizes, radii, peers, quick: bool):
    cases = []
    for size in sizes:
        for r in radii:
            if 2 * r + 1 > size:
                continue
            for fp in ("disk", "square"):
                cases.append(Case("median_filter", dict(size=size, radius=r, footprint=fp),
                                  lambda im, r=r, fp=fp: gi.median_filter(im, r, footprint=fp), peers["median"](r, fp)))
            if r <= 25:  # float images: the rank transform plus the same kernel (rank medians take integers only)
                float_peers = {name: fn for name, fn in peers["median"](r, "disk").items() if "rank" not in name}
                cases.append(Case("median_filter", dict(size=size, radius=r, footprint="disk", dtype="float32"),
                                  lambda im, r=r: gi.median_filter(im, r), float_peers))
            cases.append(Case("median_background", dict(size=size, radius=r),
                              lambda im, r=r: gi.median_background(im, r), peers["median"](r, "disk")))
            for fp in ("disk", "square"):
                cases.append(Case("grey_opening", dict(size=size, radius=r, footprint=fp),
                                  lambda im, r=r, fp=fp: gi.grey_opening(im, r, footprint=fp), peers["opening"](r, fp)))
            cases.append(Case("white_tophat", dict(size=size, radius=r, footprint="disk"),
                              lambda im, r=r: gi.white_tophat(im, r), peers["tophat"](r, "disk")))
        for b in (60,) if quick else (30, 60, 100):
            cases.append(Case("block_minimum", dict(size=size, block_size=b),
                              lambda im, b=b: gi.block_minimum(im, b), peers["block_minimum"](b)))
        cases.append(Case("fit_polynomial", dict(size=size, degree=2, robust=False),
                          lambda im: gi.fit_polynomial(im, 2), peers["fit"](2, False)))
        cases.append(Case("fit_polynomial", dict(size=size, degree=6, robust=True),
                          lambda im: gi.fit_polynomial(im, 6, robust=True), peers["fit"](6, True)))
        cases.append(Case("gaussian_filter", dict(size=size, sigma=11.49),
                          lambda im: gi.gaussian_filter(im, 11.49), peers["gaussian"](11.49)))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1080, 2160])
    parser.add_argument("--radii", type=int, nargs="+", default=[5, 25, 50, 100, 250])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-budget", type=float, default=20.0, help="seconds a peer may take on the full image before it is timed on a crop")
    parser.add_argument("--kernels", nargs="*", help="only these kernels")
    parser.add_argument("--quick", action="store_true", help="256^2 and 512^2, radii 5 and 25")
    parser.add_argument("--background", type=float, default=400.0, help="field level of the test images (counts)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.radii, args.repeats, args.peer_budget = [256, 512], [5, 25], 2, 2.0

    gpu = args.device == "gpu"
    if gpu and not gi.gpu_available():
        print("bench_kernels: --device gpu but no usable CUDA GPU", file=sys.stderr)
        return 2
    peers = gpu_peers() if gpu else cpu_peers()
    machine = machine_description()
    rows = []
    images = {s: test_image(s, background=args.background) for s in args.sizes}
    float_images = {s: (images[s] / np.float32(4095)).astype(np.float32) for s in args.sizes}  # 12-bit field in [0, 1]
    for case in build_cases(args.sizes, args.radii, peers, args.quick):
        if args.kernels and case.kernel not in args.kernels:
            continue
        image = (float_images if case.params.get("dtype") == "float32" else images)[case.params["size"]]
        if gpu:
            import cupy

            image = cupy.asarray(image)
        ours = timed(case.ours, image, budget=600.0, repeats=args.repeats)
        entry = {"kernel": case.kernel, "params": case.params, "device": args.device, "gpuillum": ours, "peers": {}}
        for name, fn in case.peers.items():
            try:
                entry["peers"][name] = timed(fn, image, args.peer_budget, args.repeats)
            except Exception as exc:  # a peer that cannot run this case (size limits, dtype) is reported, not fatal
                first_line = (str(exc).splitlines() or [""])[0][:200]
                entry["peers"][name] = {"error": f"{type(exc).__name__}: {first_line}"}
        timed_peers = {k: v for k, v in entry["peers"].items() if "median_s" in v}
        if timed_peers:
            best = min(timed_peers, key=lambda k: timed_peers[k]["median_s"])
            entry["best_peer"] = best
            entry["speedup_vs_best_peer"] = timed_peers[best]["median_s"] / ours["median_s"]
        rows.append(entry)
        _print_row(entry)
        if not args.no_save:  # rewritten after every case, so an interrupted run keeps what it measured
            path = write_results("kernels" + (f"-{args.tag}" if args.tag else ""),
                                 {"benchmark": "kernels", "quick": args.quick, "machine": machine, "args": vars(args), "results": rows})
    if not args.no_save and rows:
        print(f"wrote {path}")
    return 0


def _print_row(entry):
    params = " ".join(f"{k}={v}" for k, v in entry["params"].items())
    ours = entry["gpuillum"]["median_s"] * 1e3
    line = f"{entry['kernel']:<18} {params:<40} gpuillum {ours:10.2f} ms"
    if "best_peer" in entry:
        peer = entry["peers"][entry["best_peer"]]
        mark = "*" if "extrapolated_from" in peer else ""
        line += f" | best peer {entry['best_peer']} {peer['median_s'] * 1e3:.1f} ms{mark} | x{entry['speedup_vs_best_peer']:.1f}"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
