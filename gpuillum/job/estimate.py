"""Pass 1: reduce each group's images in fixed batches, merge the partials in order, finish a model.

The images of a group are cut into consecutive batches of BATCH_SIZE (by position, whatever gets
skipped); each batch is reduced into a fresh partial in image order (a task, on a thread or a Dask
worker) and the partials are merged strictly in batch order, so the model is bit-identical for
any number of workers. The method finishes the merged reduction into an IlluminationModel, saved
in OUT/illum: a CellProfiler function as ``<plate>_Illum<channel>.npy``, any other model as one
``.npz``, each with a PNG preview.
"""
from __future__ import annotations

import dataclasses
import time

from ..backend import resolve_device
from .executor import BATCH_SIZE, fixed_batches
from .reading import read_records, upload_batch

BASELINE_IMAGES = "baseline_images"  # model.info: the names of the images the baseline values belong to, in order


class OrderedMerge:
    """Merge partial reductions in batch-index order, whatever order they arrive in.

    ``push(index, partial)`` keeps out-of-order partials until their turn; a batch whose images
    were all skipped pushes None. ``result()`` is the merged reduction (None when empty).
    """

    def __init__(self):
        self._next = 0
        self._waiting: dict[int, object] = {}
        self.total = None

    def push(self, index: int, partial) -> None:
        if index < self._next or index in self._waiting:
            raise ValueError(f"batch {index} was merged already")
        self._waiting[index] = partial
        while self._next in self._waiting:
            part = self._waiting.pop(self._next)
            if part is not None:
                self.total = part if self.total is None else self.total.merge(part)
            self._next += 1

    def result(self):
        if self._waiting:
            raise ValueError(f"batches {sorted(self._waiting)} arrived but batch {self._next} is missing")
        return self.total


def reduce_batch(numbered_batch, method, settings, info, reader, device_spec, on_error):
    """One batch (its index and its records): (the partial reduction or None, the skipped images,
    the names of those reduced).

    The batch's images are read in order (a stack's planes with one opening of the file) and, on
    a GPU, copied to the device in one pinned transfer. The reduction knows the group position of
    the batch's first image (index * BATCH_SIZE)."""
    index, batch = numbered_batch
    device = resolve_device(device_spec)
    skipped: list = []
    loaded = list(read_records(batch, reader, on_error, skipped))
    images = [image for _record, image in loaded]
    if device.is_gpu:
        images = upload_batch(images, device)
    partial = None
    with device.activate():
        for image in images:
            if partial is None:
                partial = method.reduction(settings, info, index * BATCH_SIZE)
            partial.add(device.asarray(image))
    return partial, skipped, [record.name for record, _image in loaded]


def estimate_group(run, group) -> None:
    """Pass 1 for one group: reuse an intact model (--resume), or reduce, finish and save one."""
    from ..io.manifest import input_stamp
    from .models import load_model, save_model

    spec = run.spec
    path = run.model_path(group)
    inputs = input_stamp((record.name, record.path) for record in group.records)
    relpath = path.relative_to(run.out.path).as_posix()
    if run.out.intact(relpath, path, inputs):
        group.model, group.model_path = load_model(path, spec.apply_method), path
        group.model_sha = run.out.manifest.files[relpath]["sha256"]  # just verified against the file
        run.say(f"{group.label}: model {path} intact, reused")
        return
    started = time.perf_counter()
    merged, used_names = OrderedMerge(), []
    with run.progress_bar(len(group.records), f"calc  {group.name}") as bar:
        batches = list(enumerate(fixed_batches(group.records)))  # (index, batch): its first image is index * BATCH_SIZE
        results = run.executor.map(reduce_batch, batches, spec.method, spec.settings, group.info, group.reader,
                                   run.executor.device_spec, spec.on_error)
        for (index, batch), (partial, skipped, used) in results:
            for name, problem in skipped:
                run.skip(name, problem)
            used_names.extend(used)
            merged.push(index, partial)
            bar.update(len(batch))
            run.check_stop()
    total = merged.result()
    if total is None:
        run.problem(None, f"{group.plate}/{group.channel}: empty channel, every image was skipped")
        return
    if total.count < run.min_images:
        run.warn(few_images_warning(group.plate, group.channel, total.count))
    model = spec.method.finish(spec.settings, total, group.info, spec.device)
    if model.baseline is not None:  # one value per image reduced: say which, so a correction finds its own
        model = dataclasses.replace(model, info={**model.info, BASELINE_IMAGES: used_names})
    group.model, group.model_path = model, path
    group.model_sha = save_model(run, group, path, inputs)
    message = model.info.get("message")
    if message:  # what the method says of its fit, e.g. a darkfield it could not identify
        (run.warn if "not identifiable" in message else run.say)(f"{group.label}: {message}")
    run.out.manifest.timings[f"calc {group.name}"] = time.perf_counter() - started
    run.result.functions[group.key] = path
    run.out.save(force=True)


def few_images_warning(plate: str, channel: str, count: int) -> str:
    """Why a model estimated from fewer than MIN_IMAGES images is not to be trusted."""
    from .groups import MIN_IMAGES

    return (f"plate {plate}, channel {channel}: only {count} image{'s' * (count != 1)}; an illumination function "
            f"from so few images follows the cells, not the illumination (use {MIN_IMAGES} or more)")
