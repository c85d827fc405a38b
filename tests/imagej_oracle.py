"""Test oracle: the real ImageJ, run headless under ``xvfb-run``, many jobs per JVM.

ImageJ's Process > Subtract Background (and RankFilters' Mean, Top Hat, Z Project) are the
reference for ``gpuillum.filters.rolling_ball``, ``sliding_paraboloid``, ``mean`` and
``projection``. Starting a JVM costs ~1 s, so a test module collects every image and option
string it needs into ``Job`` objects and runs them all in ONE ``run_jobs`` call: the inputs are
written as TIFFs into a temporary folder, one macro loops over them, and the outputs are read back
with tifffile. Nothing is cached between runs or written into the repository.

Where ImageJ is missing (Debian: ``apt-get install -y imagej xvfb``; the jar is looked up at
``$GPUILLUM_IMAGEJ_JAR`` or /usr/share/java/ij.jar), ``skip_reason()`` says so and the tests skip
with that reason. CI installs both (.ci/run), so there the tests run.

Facts the macro relies on (docs/imagej.md section 12): ``-batch`` runs a macro with stdout as the
Log; Subtract Background needs a display for its dialog even with macro options (hence xvfb);
a plugin exception is printed and the macro goes on with the image unchanged.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

DEFAULT_JAR = "/usr/share/java/ij.jar"
_MACRO = r"""
args = split(getArgument(), "|");
jobs = split(File.openAsString(args[0]), "\n");
print("version=" + getVersion());
print("threads=" + call("ij.Prefs.getThreads"));
setBatchMode(true);
for (i = 0; i < jobs.length; i++) {
    f = split(jobs[i], "|");
    repeats = parseInt(f[4]);
    for (k = 0; k < repeats; k++) {
        open(f[0]);
        t0 = getTime();
        run(f[2], f[3]);
        t1 = getTime();
        if (k == repeats - 1) saveAs("Tiff", f[1]);
        print("job=" + i + " ms=" + (t1 - t0));
        run("Close All");
    }
}
print("finished");
"""


@dataclass
class Job:
    """One ImageJ command on one image: ``run(command, options)``, e.g. ("Subtract Background...",
    "rolling=50 light"). A 3-D ``image`` is written as an ImageJ stack (add "stack" to the options
    to process every slice). ``repeats`` > 1 times the command that many times (the input is opened
    again before each run, outside the timed region)."""

    image: np.ndarray
    command: str
    options: str
    repeats: int = 1


@dataclass
class Result:
    """What ImageJ produced for a Job: the output pixels and the times of each run (ms, measured
    inside the JVM with getTime() around run())."""

    output: np.ndarray
    times_ms: list


def jar_path() -> Path:
    return Path(os.environ.get("GPUILLUM_IMAGEJ_JAR", DEFAULT_JAR))


def skip_reason() -> str | None:
    """Why the oracle cannot run here (None when it can). Where ``GPUILLUM_REQUIRE_IMAGEJ`` is set
    (CI), a missing ImageJ is an error instead of a reason to skip."""
    reason = _missing()
    if reason and os.environ.get("GPUILLUM_REQUIRE_IMAGEJ", "") not in ("", "0"):
        raise RuntimeError(f"GPUILLUM_REQUIRE_IMAGEJ is set but {reason}")
    return reason


def _missing() -> str | None:
    if not jar_path().is_file():
        return f"ImageJ not installed: no {jar_path()} (apt-get install -y imagej xvfb, or set GPUILLUM_IMAGEJ_JAR)"
    for tool in ("java", "xvfb-run"):
        if shutil.which(tool) is None:
            return f"ImageJ oracle needs {tool!r} on PATH (apt-get install -y imagej xvfb)"
    return None


def run_jobs(jobs: list[Job], timeout: float = 300.0) -> tuple[list[Result], dict]:
    """Run every job in one ImageJ process; returns the results (in job order) and
    ``{"version": ImageJ's getVersion(), "threads": its thread setting}``.

    Raises RuntimeError with ImageJ's log when it did not finish or a job produced no output.
    """
    reason = skip_reason()
    if reason:
        raise RuntimeError(reason)
    with tempfile.TemporaryDirectory(prefix="gpuillum-imagej-") as folder:
        folder = Path(folder)
        lines = []
        for i, job in enumerate(jobs):
            source, target = folder / f"in{i}.tif", folder / f"out{i}.tif"
            _write_tiff(source, job.image)
            for text in (job.command, job.options):
                if not text or "|" in text or "\n" in text:
                    raise ValueError(f"job {i}: command and options must be non-empty without '|' or newlines")
            lines.append("|".join((str(source), str(target), job.command, job.options, str(job.repeats))))
        (folder / "jobs.txt").write_text("\n".join(lines))
        macro = folder / "oracle.ijm"
        macro.write_text(_MACRO)
        command = ["xvfb-run", "-a", "java", "-Xmx4g", "-jar", str(jar_path()), "-batch", str(macro), str(folder / "jobs.txt")]
        stdout, stderr = _run_imagej(command, folder, timeout, f"{len(jobs)} jobs")
        log = stdout + stderr
        if "finished" not in stdout:
            raise RuntimeError(f"ImageJ stopped before the end of its {len(jobs)} jobs:\n{log[-4000:]}")
        info = {key: next((line.split("=", 1)[1] for line in stdout.splitlines() if line.startswith(key + "=")), "?")
                for key in ("version", "threads")}
        times: dict[int, list] = {}
        for line in stdout.splitlines():
            if line.startswith("job="):
                job_part, ms_part = line.split()
                times.setdefault(int(job_part[4:]), []).append(float(ms_part[3:]))
        results = []
        for i in range(len(jobs)):
            target = folder / f"out{i}.tif"
            if not target.is_file():
                raise RuntimeError(f"ImageJ wrote no output for job {i} ({jobs[i].command} {jobs[i].options}):\n{log[-4000:]}")
            results.append(Result(tifffile.imread(target), times.get(i, [])))
        return results, info


def run_macro(source: str, images: dict[str, np.ndarray] | None = None, timeout: float = 120.0) -> tuple[str, dict]:
    """Run one ImageJ macro (``source``) headless and return what it printed (ImageJ's Log) and
    {name: array} of the TIFFs it saved into its folder.

    ``images`` ({name: array}) are written first as ``<name>.tif``; in the macro, ``FOLDER`` is
    that folder's path with a trailing slash, e.g. ``open(FOLDER + "stack.tif")`` and
    ``saveAs("Tiff", FOLDER + "out.tif")``. The macro must end by printing "finished".
    """
    reason = skip_reason()
    if reason:
        raise RuntimeError(reason)
    with tempfile.TemporaryDirectory(prefix="gpuillum-imagej-") as folder:
        folder = Path(folder)
        for name, image in (images or {}).items():
            _write_tiff(folder / f"{name}.tif", image)
        macro = folder / "macro.ijm"
        macro.write_text(f'FOLDER = "{folder}/";\nsetBatchMode(true);\n' + source)
        written = set(folder.iterdir())
        stdout, stderr = _run_imagej(["xvfb-run", "-a", "java", "-Xmx4g", "-jar", str(jar_path()), "-batch", str(macro)],
                                     folder, timeout, "its macro")
        if "finished" not in stdout:
            raise RuntimeError(f"ImageJ stopped before the end of its macro:\n{(stdout + stderr)[-4000:]}")
        saved = {path.stem: tifffile.imread(path) for path in sorted(set(folder.iterdir()) - written) if path.suffix == ".tif"}
        return stdout, saved


def _run_imagej(command, folder: Path, timeout: float, what: str) -> tuple[str, str]:
    """Run ImageJ (``command``) in ``folder``; (stdout, stderr). A hung ImageJ is killed with its Xvfb."""
    # a new session, so that a hung ImageJ (a modal error dialog) is killed with its Xvfb
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder,
                               start_new_session=True)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RuntimeError(f"ImageJ did not finish {what} in {timeout:.0f} s (a modal dialog?)") from exc


def paraboloid_is_legacy(version: str) -> bool:
    """Whether an ImageJ version (getVersion(): "1.53t", "1.54f", "1.54t4") predates the sliding
    paraboloid changes of 1.54t4 (docs/imagej.md 9.4), i.e. needs ``legacy=True`` to match."""
    match = re.match(r"(\d+)\.(\d+)([a-z]?)(\d*)", version)
    if not match:
        raise ValueError(f"cannot parse the ImageJ version {version!r}")
    major, minor, letter, build = int(match[1]), int(match[2]), match[3] or "", int(match[4] or 0)
    return (major, minor, letter, build) < (1, 54, "t", 4)


def _write_tiff(path: Path, image: np.ndarray) -> None:
    image = np.ascontiguousarray(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise TypeError(f"ImageJ reads uint8, uint16 and float32 images, not {image.dtype}")
    if image.ndim == 3:
        tifffile.imwrite(path, image, imagej=True, metadata={"axes": "ZYX"})
    else:
        tifffile.imwrite(path, image)
