"""Pass 2: correct every image and write each file whole, in the input's format and metadata.

A file is corrected by one task (a thread, or a Dask worker, which takes a batch of files): its
images (one, or every plane of a stack) are read and checked, corrected on the run's device by
their group's model, or by the image-scope method, then by the per-image background if one is
asked, cast by the output dtype policy, and written atomically: a single image with
io.tiff.write_tiff, a stack with io.stacks.write_stack. Results come back in file order, so the
manifest records each output as it completes and ``--resume`` can trust it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..backend import resolve_device, to_numpy
from ..errors import UserError
from ..output_dtype import OutputStats
from .estimate import BASELINE_IMAGES
from .groups import group_key
from .outdir import corrected_path, os_error_text
from .reading import read_problem


class OutputProblem(UserError):
    """Writing an output failed (full disk, no permission): never skipped, always fatal."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class WrittenFile:
    """One corrected file: input relpath, output path relative to OUT, checksum and size."""

    relpath: str
    output: str
    sha256: str
    size: int


@dataclass
class Corrections:
    """How pass 2 corrects each image: the groups' models (by key) or the image-scope method, the
    per-image background, the output dtype policy, and each group's reader. Picklable: a Dask run
    scatters it once to every worker."""

    scope: str
    models: dict  # group key -> IlluminationModel or None
    readers: dict  # group key -> CheckedReader
    method: object = None  # image-scope method and its settings
    settings: object = None
    background: tuple | None = None  # (method, settings)
    output_dtype: str = "same"
    _resident: dict = field(default_factory=dict, repr=False)  # (key, device): the model there; ("baseline", key): positions

    def __getstate__(self):
        return {**self.__dict__, "_resident": {}}

    def model_on(self, key, device, like):
        """The group's model on ``like``'s device, uploaded once per device."""
        cache_key = (key, str(device))
        model = self._resident.get(cache_key)
        if model is None:
            model = self.models[key]
            model = model if not device.is_gpu else model.to(like)
            self._resident[cache_key] = model
        return model

    def baseline_index(self, key, name: str) -> int:
        """The position of image ``name`` in its group's baseline (the images pass 1 reduced)."""
        positions = self._resident.get(("baseline", key))
        if positions is None:
            positions = {image: index for index, image in enumerate(self.models[key].info[BASELINE_IMAGES])}
            self._resident[("baseline", key)] = positions
        return positions[name]

    def correct(self, record, image, device, stats: dict):
        """``image`` (NumPy) corrected on ``device``; returns NumPy. ``stats``: group key -> OutputStats."""
        key = group_key(record, self.scope)
        counts = stats.setdefault(key, OutputStats())
        first = "same" if self.background is not None else self.output_dtype
        with device.activate():
            pixels = device.asarray(image)
            model = self.models.get(key)
            if model is not None:
                index = self.baseline_index(key, record.name) if model.baseline is not None else None
                pixels = self.model_on(key, device, pixels).apply(pixels, index=index, output_dtype=first,
                                                                 stats=counts if self.background is None else None)
            elif self.method is not None:
                pixels = self.method.correct(self.settings, pixels, output_dtype=first,
                                             stats=counts if self.background is None else None)
            if self.background is not None:
                method, settings = self.background
                pixels = method.correct(settings, pixels, output_dtype=self.output_dtype, stats=counts)
            return to_numpy(pixels)


def _read_file(file, corrections: Corrections):
    """Every image of ``file``, checked against its group's reader, and the metadata to write it with."""
    from ..io.stacks import read_stack
    from ..io.tiff import read_tiff

    if file.stacked:
        from ..io.tiff import ImageReadError

        stack, info = read_stack(file.path)
        if len(file.records) != info.planes:
            raise ImageReadError(file.path, f"{info.planes - len(file.records)} of its planes were left out, and a stack "
                                 "is written whole or not at all")
        planes = stack.reshape(-1, *info.plane_shape)
        images = [planes[record.page] for record in file.records]
    else:
        image, info = read_tiff(file.path)
        images = [image]
    for record, image in zip(file.records, images):
        corrections.readers[group_key(record, corrections.scope)].check(record, image)
    return images, info


def write_corrected(out_dir, file, corrected, info, compression: str) -> WrittenFile:
    """Write one corrected file atomically like its input; OSError becomes OutputProblem."""
    from ..io.manifest import file_sha256
    from ..io.stacks import write_stack
    from ..io.tiff import write_tiff

    path = corrected_path(out_dir, file.relpath)
    try:
        if file.stacked:
            write_stack(path, np.stack(corrected).reshape(info.shape), info, compression)
        else:
            write_tiff(path, corrected[0], like=info, compression=compression)
        size = path.stat().st_size
        digest = file_sha256(path)
    except OSError as error:
        raise OutputProblem(path, os_error_text(error)) from None
    return WrittenFile(file.relpath, path.relative_to(out_dir).as_posix(), digest, size)


def correct_files(files, corrections: Corrections, out_dir, compression: str, device_spec, on_error: str):
    """One task: correct and write ``files``; returns (written, skipped, stats by group key).

    An input that cannot be read or corrected (a one-line UserError) stops the pass, or with
    ``on_error="skip"`` is listed; a failed write always stops it."""
    device = resolve_device(device_spec)
    written, skipped, stats = [], [], {}
    for file in files:
        try:
            images, info = _read_file(file, corrections)
            corrected = [corrections.correct(record, image, device, stats) for record, image in zip(file.records, images)]
        except OutputProblem:
            raise
        except UserError as error:
            if on_error != "skip":
                raise
            from ..io.tiff import ImageReadError

            problem = error if isinstance(error, ImageReadError) else ImageReadError(file.path, str(error))
            skipped.extend(read_problem(record, problem) for record in file.records)
            continue
        written.append(write_corrected(out_dir, file, corrected, info, compression))
    return written, skipped, stats


def correct_group(run, group, files) -> None:
    """Pass 2 for the files a group writes first: reuse intact outputs (--resume), correct the rest,
    record each output in the manifest as it completes."""
    from ..io.manifest import input_stamp

    out = run.out
    todo, stamps = [], {}
    for file in files:
        models = [run.model_sha(record) for record in file.records]
        stamps[file.relpath] = input_stamp([(file.relpath, file.path)], extra="".join(dict.fromkeys(models)))
        path = corrected_path(out.path, file.relpath)
        if out.intact(path.relative_to(out.path).as_posix(), path, stamps[file.relpath]):
            run.result.reused.append(file.relpath)
        else:
            todo.append(file)
    started = time.perf_counter()
    label = f"apply {group.name}"
    with run.progress_bar(len(todo), label) as bar:
        batches = [todo[start:start + run.executor.batch_size] for start in range(0, len(todo), run.executor.batch_size)]
        results = run.executor.map(correct_files, batches, run.corrections, out.path, run.spec.compression,
                                   run.executor.device_spec, run.spec.on_error, depth=2 * run.executor.threads)
        for batch, (written, skipped, stats) in results:
            for item in written:
                run.result.written.append(item)
                # checksummed by the task that wrote it (in parallel), so recorded directly
                out.manifest.record_entry(item.output, item.sha256, item.size, "corrected", item.relpath, stamps[item.relpath])
            for name, problem in skipped:
                run.skip(name, problem)
            for key, counts in stats.items():
                run.group_of[key].stats.merge(counts)
            out.save()
            bar.update(len(batch))
            run.check_stop()
    out.manifest.timings[label] = time.perf_counter() - started
    out.save(force=True)
