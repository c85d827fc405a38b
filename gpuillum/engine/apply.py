"""Plate pass 2: correct every image and write it, in the input's dtype, metadata and compression.

CPU: each image is read, corrected and written by one task of a thread pool, a bounded number
in flight (tifffile/imagecodecs and NumPy release the GIL). GPU: images are decoded by the same
pool into a pinned host batch, copied to the device in one transfer on a side stream, corrected
there by the same ``correct_image`` code (through ``xp``) against the function kept resident on
the device, copied back into one of two pinned output batches, and written by the pool while
the next batch is decoded and computed.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .background import BackgroundSettings, subtract_background
from .reading import ordered_map

GPU_BATCH = 16


class OutputProblem(Exception):
    """Writing an output failed (full disk, no permission): never skipped, always fatal."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def os_error_text(error: OSError) -> str:
    """A write error in a few words: "no space left on device" for a full disk (also NumPy's
    errno-less "N requested and M written" short write), else the OS's text."""
    import errno

    text = str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT) or (error.errno is None and "requested and" in text and "written" in text):
        return "no space left on device"
    return error.strerror or text


@dataclass(frozen=True)
class ApplyOptions:
    """How pass 2 turns an input image into its corrected copy.

    ``method``: "Divide" or "Subtract" the illumination function. ``per_image_settings``: with
    CellProfiler's "Each" aggregation the function is computed from each image itself.
    ``background``: per-image background subtracted after the function. ``compression``: "same"
    keeps each input's compression, or a tifffile compression name ("none" for uncompressed).
    """

    method: str = "Divide"
    background: BackgroundSettings | None = None
    per_image_settings: object = None
    compression: str = "same"


@dataclass(frozen=True)
class WrittenFile:
    """One corrected image: input relpath, output path relative to OUT, checksum and size."""

    relpath: str
    output: str
    sha256: str
    size: int


def correct_image(image, function, options: ApplyOptions):
    """The corrected image, same dtype and backend as ``image`` (NumPy or CuPy)."""
    from gpuillum.correct import apply

    if options.per_image_settings is not None:
        from gpuillum.methods.cellprofiler import IlluminationAccumulator

        function = IlluminationAccumulator(options.per_image_settings).add(image).finalize()
    corrected = image
    if function is not None:
        corrected = apply(corrected, function, method=options.method, on_invalid="ignore", units="cellprofiler")  # checked once per plate
    if options.background is not None:
        corrected = subtract_background(corrected, options.background)
    return corrected


def corrected_path(out_dir, record) -> Path:
    """OUT/corrected/<the record's path relative to INPUT>."""
    return Path(out_dir) / "corrected" / record.relpath


def write_corrected(out_dir, record, image, info, compression: str) -> WrittenFile:
    """Write one corrected image atomically like its input; OSError becomes OutputProblem."""
    from gpuillum.io.manifest import file_sha256
    from gpuillum.io.tiff import write_tiff

    path = corrected_path(out_dir, record)
    try:
        write_tiff(path, image, like=info, compression=compression)
        size = path.stat().st_size
        digest = file_sha256(path)
    except OSError as error:
        raise OutputProblem(path, os_error_text(error)) from None
    return WrittenFile(record.relpath, path.relative_to(out_dir).as_posix(), digest, size)


class _CorrectAndWrite:
    """read -> correct -> write for one record on the CPU (one thread-pool task)."""

    def __init__(self, reader, function, options, out_dir):
        self.reader, self.function, self.options, self.out_dir = reader, function, options, Path(out_dir)

    def __call__(self, record) -> WrittenFile:
        image, info = self.reader.read_with_info(record)
        corrected = correct_image(image, self.function, self.options)
        return write_corrected(self.out_dir, record, corrected, info, self.options.compression)


def apply_records(records, function, options: ApplyOptions, out_dir, reader, *, device, threads: int = 1,
                  on_error: str = "fail", done=None):
    """Correct and write ``records``; returns (written files, skipped (relpath, reason) pairs).

    ``function``: the NumPy illumination function or None. ``done(WrittenFile)`` is called in
    this thread, in record order, as each file is complete (the job updates its manifest there).
    Input problems (ValueError naming the file) stop the pass, or with ``on_error="skip"`` are
    listed; output problems always stop it.
    """
    threads = max(1, threads)
    written: list[WrittenFile] = []
    skipped: list[tuple[str, str]] = []

    def settle(record, result, error):
        if error is not None:
            if on_error != "skip":
                raise error
            skipped.append((record.relpath, str(error)))
            return
        written.append(result)
        if done is not None:
            done(result)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gpuillum-apply") as pool:
        if device.is_gpu:
            _apply_on_gpu(records, function, options, Path(out_dir), reader, device, pool, threads, settle)
        else:
            task = _CorrectAndWrite(reader, function, options, out_dir)
            for record, result, error in ordered_map(task, records, pool, depth=2 * threads):
                settle(record, result, error)
    return written, skipped


def _apply_on_gpu(records, function, options, out_dir, reader, device, pool, threads, settle):
    """Batched GPU apply: pinned host batches, one H2D and one D2H copy per batch, writes overlap.

    Host memory: one pinned input batch, two pinned output batches, and up to 2 * GPU_BATCH
    decoded images waiting (bounded read-ahead); device memory: the function and two batches.
    """
    import cupyx

    cp = device.xp
    shape, dtype = reader.shape, reader.dtype
    with device.activate():
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:  # the batches run on this stream: the function must be on the device before them
            resident = None if function is None else cp.asarray(function)
        pinned_in = cupyx.empty_pinned((GPU_BATCH, *shape), dtype)
        pinned_out = None  # allocated from the first corrected batch's dtype (float64 in -> float32 out)
        device_in = cp.empty((GPU_BATCH, *shape), dtype)
        writes: list[list] = [[], []]
        reads = ordered_map(reader.read_with_info, records, pool, depth=max(2 * GPU_BATCH, 2 * threads))
        batch_index = 0
        while True:
            batch = []
            for record, loaded, error in reads:
                if error is not None:
                    settle(record, None, error)
                    continue
                pinned_in[len(batch)] = loaded[0]
                batch.append((record, loaded[1]))
                if len(batch) == GPU_BATCH:
                    break
            if not batch:
                break
            slot = batch_index % 2
            for record, future in writes[slot]:  # this output buffer is free once its writes are done
                _settle_write(record, future, settle)
            count = len(batch)
            with stream:
                device_in[:count].set(pinned_in[:count], stream=stream)
                corrected = cp.stack([correct_image(device_in[i], resident, options) for i in range(count)])
                if pinned_out is None:
                    pinned_out = [cupyx.empty_pinned((GPU_BATCH, *shape), corrected.dtype) for _ in range(2)]
                corrected.get(stream=stream, out=pinned_out[slot][:count])
            stream.synchronize()
            writes[slot] = [
                (record, pool.submit(write_corrected, out_dir, record, pinned_out[slot][i], info, options.compression))
                for i, (record, info) in enumerate(batch)
            ]
            batch_index += 1
        for slot in (batch_index % 2, (batch_index + 1) % 2):
            for record, future in writes[slot]:
                _settle_write(record, future, settle)


def _settle_write(record, future, settle):
    try:
        result = future.result()
    except ValueError as error:
        settle(record, None, error)
    else:
        settle(record, result, None)
