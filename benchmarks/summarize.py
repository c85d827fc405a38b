"""Markdown tables of the benchmark results in benchmarks/results/ (for the README).

Usage: ``python benchmarks/summarize.py [RESULTS_DIR]``. Reads every kernels-*.json,
cellprofiler-*.json, plate-*.json, accuracy-median-background-*.json, background-*.json,
accuracy-flatfield-*.json, flatfield-*.json and qc-validation-*.json file (not the `--quick`
smoke runs; of the dated runs of one benchmark and machine, the latest) and prints one table per
benchmark with the machine each ran on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CELLPROFILER_PEERS = ("CellProfiler", "centrosome")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}" if seconds < 10 else f"{seconds:,.1f} s"


def _machine(machine: dict) -> str:
    gpu = machine.get("gpu")
    cpu = f"{machine.get('cpu_count')}-core {machine.get('processor', 'CPU')}"
    where = f"{gpu['name']} GPU, {cpu}" if gpu else f"{cpu}, no GPU"
    commit = f"; gpuillum at {machine['commit']}" if machine.get("commit") else ""
    return (f"{where}; numpy {machine.get('numpy')}, scipy {machine.get('scipy')}, scikit-image {machine.get('skimage', '-')}; "
            f"{machine.get('date', '')[:10]}{commit}")


def _params(params: dict) -> str:
    skip = {"size"}
    return ", ".join(f"{k} {v}" for k, v in params.items() if k not in skip)


def kernels_table(files: list[Path]) -> str:
    """One row per (kernel, size, field level, parameters); a case measured twice keeps the row of the
    later run, by the date and time each file records (file times do not survive a git clone)."""
    rows, machines = {}, set()
    runs = [json.loads(path.read_text()) for path in files]
    for data in sorted(runs, key=lambda run: run["machine"].get("date", "")):
        machines.add(_machine(data["machine"]))
        level = data["args"].get("background", 400.0)
        for entry in data["results"]:
            peers = {k: v for k, v in entry["peers"].items() if "median_s" in v}
            cp = {k: v for k, v in peers.items() if any(tag in k for tag in CELLPROFILER_PEERS)}
            best = entry.get("best_peer")
            ours = entry["gpuillum"]["median_s"]
            cp_name = min(cp, key=lambda k: cp[k]["median_s"]) if cp else None
            key = (entry["kernel"], entry["params"]["size"], f"{level:.0f}", _params(entry["params"]))
            rows[key] = key + (
                _ms(ours),
                f"{best}: {_ms(peers[best]['median_s'])}{'*' if 'extrapolated_from' in peers[best] else ''}" if best else "-",
                f"{peers[best]['median_s'] / ours:.1f}x" if best else "-",
                f"{cp[cp_name]['median_s'] / ours:.1f}x" if cp_name else "-",
            )
    rows = [rows[key] for key in sorted(rows)]
    lines = ["| kernel | size | field level | parameters | gpuillum ms | fastest peer: ms | vs fastest | vs CellProfiler's path |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    notes = ("Field level: counts of the 12-bit test field above its 100-count offset (skimage's rank median slows "
             "down as it rises). *: the peer was timed on a centred crop and scaled by the pixel ratio.\n")
    return "\n".join(lines) + "\n\n" + notes + "".join(f"Machine: {m}.\n" for m in sorted(machines))


def cellprofiler_table(path: Path) -> str:
    data = json.loads(path.read_text())
    size = data.get("arguments", {}).get("size", "?")
    timed = sorted({r["cp_images_timed"] for r in data["results"] if "cp_images_timed" in r})
    each = f"{'/'.join(map(str, timed))} images, one on each side in turn" if timed else "image by image"
    lines = [f"{data['results'][0]['images']} images of {size}² per setting; \"per image\" rows time the Each mode on {each}" if data["results"] else "",
             ""]
    gpu = any("gpu_s" in r for r in data["results"])
    columns = ["setting", "plate", "timing", "gpuillum CPU s", "CellProfiler's path s", "speed-up"]
    columns += ["GPU s, images uploaded", "GPU s, images already on the GPU"] if gpu else []
    lines += ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in data["results"]:
        cells = [r["setting"], r.get("camera", "12-bit"), r["timing"], f"{r['gpuillum_cpu_s']:.4f}", f"{r['cellprofiler_cpu_s']:.4f}",
                 f"{r['speedup_cpu']:.1f}x"]
        cells += [_gpu_time(r, "gpu_with_upload_s"), _gpu_time(r, "gpu_s")] if gpu else []
        lines.append("| " + " | ".join(cells) + " |")
    if gpu:
        lines += ["", "GPU, images uploaded: the host-to-GPU copy of every image included, as for a caller holding NumPy "
                      "images; images already on the GPU: the plate uploaded before the timing. Each-mode GPU rows were "
                      "timed with the image already on the GPU only."]
    plate_rows = [r for r in data["results"] if "gpuillum_cpu_plate_s_per_image" in r]
    if plate_rows:
        lines += ["", "Each mode over the whole plate (`calculate(plate)`), gpuillum CPU per image: " + "; ".join(
            f"{r['setting']} ({r.get('camera', '12-bit')}, {r['images']} images) {r['gpuillum_cpu_plate_s_per_image']:.4f} s" for r in plate_rows) + ", including the first write of the (n, H, W) float32 result."]
    threads = {r["gpuillum_cpu_threads"] for r in data["results"] if "gpuillum_cpu_threads" in r}
    if threads:
        lines += ["", f"gpuillum's CPU path ran on {', '.join(map(str, sorted(threads)))} thread(s); CellProfiler's path is single-threaded."]
    one_thread = [r for r in data["results"] if "gpuillum_cpu_1thread_s" in r]
    if one_thread:
        lines += ["", "gpuillum on one thread, per image: " + "; ".join(
            f"{r['setting']} {r['gpuillum_cpu_1thread_s']:.4f} s ({r['speedup_cpu_1thread']:.1f}x CellProfiler's path; "
            f"the threads add {r['thread_scaling']:.2f}x)" for r in one_thread) + "."]
    return "\n".join(lines) + f"\n\nMachine: {_machine(data['machine'])}.\n"


def _gpu_time(record: dict, key: str) -> str:
    """``key``'s GPU seconds and CellProfiler's path's time over it; "-" when it was not timed."""
    if key not in record:
        return "-"
    speedup = record["cellprofiler_cpu_s"] / record[key]
    return f"{record[key]:.4f} ({speedup:.1f}x)" if speedup < 10 else f"{record[key]:.4f} ({speedup:.0f}x)"


def plate_table(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [f"{data['images']} images (sites x channels) of {data['shape'][0]}x{data['shape'][1]} uint16, recipe {data['recipe']}", "",
             "| variant | seconds | images/s |", "|---|---|---|"]
    for r in data["results"]:
        lines.append(f"| {r['variant']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} |")
    s = data.get("summary", {})
    if s:
        lines += ["", f"Best gpuillum CPU variant: {s.get('best_cpu_variant')}; {s.get('speedup_vs_cellprofiler', float('nan')):.2f}x "
                      f"CellProfiler's path; {s.get('vs_io_floor', float('nan')):.2f}x the I/O floor's time."]
        if "gpu_vs_io_floor" in s:
            busy = s.get("gpu_busy_fraction")
            busy = "unmeasured" if busy is None else f"{100 * busy:.1f} % of it"
            lines.append(f"GPU: {s['gpu_vs_io_floor']:.2f}x the I/O floor's time; the GPU busy {busy}.")
    return "\n".join(lines) + f"\n\nMachine: {_machine(data['machine'])}.\n"


def accuracy_table(path: Path) -> str:
    """``median_background`` against the exact median and the true background (medians over fields)."""
    data = json.loads(path.read_text())
    args = data["arguments"]
    lines = [f"{args['seeds']} fields of {args['size']}x{args['size']}, {100 * args['cell_fraction']:.0f} % of pixels in cells, "
             "Poisson noise; medians over the fields", "",
             "| radius | factor | vs exact median: max / mean | vs true background: mean (exact median's own) |",
             "|---|---|---|---|"]
    for r in data["results"]:
        mark = " (auto)" if r["downsample"] == "auto" else ""
        lines.append(f"| {r['radius']} | {r['factor']}{mark} | {100 * r['max_vs_exact']:.1f} % / {100 * r['mean_vs_exact']:.2f} % | "
                     f"{100 * r['mean_vs_truth']:.2f} % ({100 * r['exact_mean_vs_truth']:.2f} %) |")
    return "\n".join(lines) + f"\n\nMachine: {_machine(data['machine'])}.\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results"
    print("# Benchmark results\n\nGenerated by `python benchmarks/summarize.py > benchmarks/RESULTS.md` from the JSON "
          "files in benchmarks/results/ (each holds its machine description and every timing).\n")
    for device, files in by_device(full_runs(folder, "kernels")).items():
        print(f"### Kernels ({device})\n\n" + kernels_table(files))
    for path in full_runs(folder, "cellprofiler"):
        print(f"### CellProfiler settings ({path.name})\n\n" + cellprofiler_table(path))
    for path in full_runs(folder, "plate"):
        print(f"### Plate job ({path.name})\n\n" + plate_table(path))
    for path in full_runs(folder, "accuracy-median-background"):
        print(f"### median_background accuracy ({path.name})\n\n" + accuracy_table(path))
    for path in latest(full_runs(folder, "background")):
        print(f"### Local backgrounds against ImageJ, scikit-image and reading ({path.name})\n\n" + background_table(path))
    for path in latest(full_runs(folder, "accuracy-flatfield")):
        print(f"### Flat field + darkfield accuracy ({path.name})\n\n" + flatfield_accuracy(path))
    for path in latest([p for p in full_runs(folder, "flatfield")]):
        print(f"### Flat field fit speed against BaSiCPy ({path.name})\n\n" + flatfield_speed(path))
    for path in latest(full_runs(folder, "qc-validation")):
        print(f"### QC metrics and --method auto against known truth ({path.name})\n\n" + qc_validation(path))
    return 0


def latest(files: list[Path]) -> list[Path]:
    """Of result files that differ only by their date (``<kind>-<device>-<YYYYMMDD>.json``), the latest."""
    by_stem: dict[str, Path] = {}
    for path in sorted(files):
        by_stem[path.stem.rsplit("-", 1)[0]] = path
    return sorted(by_stem.values())


def background_table(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = ["| kernel | parameters | gpuillum ms | peer | peer ms | result |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        peer = r["peer"]
        if "ratio_to_read" in r:
            result = f"{r['ratio_to_read']:.2f}x the read time"
        else:
            speed = f"{r['speedup']:.1f}x faster" if r["speedup"] >= 1 else f"{r['speedup']:.2f}x (slower)"
            result = speed + (", identical output" if r.get("identical") or r.get("identical_on_crop") else "")
        lines.append(f"| {r['kernel']} | {_params(r['params'])} | {_ms(r['gpuillum']['median_s'])} | {peer['name']} | "
                     f"{_ms(peer['median_s'])}{'*' if 'extrapolated_from' in peer else ''} | {result} |")
    load = data.get("load_average") or {}
    when = ", ".join(f"{moment} {values[0]:.2f}" for moment, values in load.items())
    return "\n".join(lines) + f"\n\n*: timed on a crop and scaled. Load average (1 min): {when or '-'}. Machine: {_machine(data['machine'])}.\n"


def flatfield_accuracy(path: Path) -> str:
    """The synthetic known-truth table and the demo-stack table, as the benchmark rendered them."""
    data = json.loads(path.read_text())
    return (f"Flat-field error % RMS (mean-normalised, border excluded) / darkfield error in counts, mean (max) over the "
            f"plates of each column; {data.get('images')} images of {data.get('size')}^2 per plate.\n\n{data['table']}\n\n"
            + (f"gpuillum's defaults over image sizes x cell cover x conditions, the worst of two shapes (cos4, gaussian; "
               f"one plate each):\n\n{data['grid_table']}\n\n" if data.get("grid_table") else "")
            + f"BaSiC's demo stacks against the reference results (% RMS, border excluded / whole field):\n\n"
            f"{data['demo_table']}\n\nMachine: {_machine(data['machine'])}.\n")


def flatfield_speed(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = ["| images | size | torch threads | gpuillum s/image (CPU) | BaSiCPy s/image (CPU) | speed-up (CPU) |", "|---|---|---|---|---|---|"]
    for r in data["results"]:
        if "basicpy_cpu_s_per_image" not in r:
            continue
        lines.append(f"| {r['images']} | {r['size']}^2 | {r.get('torch_threads') or 'default'} | {r['gpuillum_cpu_s_per_image']:.4f} | "
                     f"{r['basicpy_cpu_s_per_image']:.4f} | {r['basicpy_cpu_s_per_image'] / r['gpuillum_cpu_s_per_image']:.1f}x |")
    return "\n".join(lines) + f"\n\nMachine: {_machine(data['machine'])}.\n"


def qc_validation(path: Path) -> str:
    data = json.loads(path.read_text())
    metrics, auto = data["metrics"], data["auto"]
    lines = ["| check | result |", "|---|---|"]
    for name in ("before_vs_true", "before_vs_visible", "after_vs_model_error"):
        entry = metrics[name]
        lines.append(f"| {name.replace('_', ' ')} | Pearson {entry['pearson']}, Spearman {entry['spearman']} (n = {entry['n']}) |")
    lines.append(f"| correction needed: false positives on evenly lit sets | {metrics['needed_false_positives']} |")
    lines.append(f"| correction needed: detected where the true peak-to-valley >= 10 % | {metrics['needed_detected_true_p2v_ge_10pct']} |")
    lines.append(f"| --method auto within 10 % of the best candidate's flat-field error | {auto['within_10pct']} "
                 f"({100 * auto['share']:.0f} %, target 90 %: {'met' if auto['passes'] else 'not met'}) |")
    if auto.get("cellprofiler_only"):
        cp = auto["cellprofiler_only"]
        lines.append(f"| ... among the CellProfiler candidates alone ({', '.join(cp['candidates'])}) | {cp['within_10pct']} "
                     f"({100 * cp['share']:.0f} %) |")
    return (f"{data['sets']} synthetic sets of {data['images']} images of {data['size']}^2; candidates "
            f"{', '.join(auto['candidates'])}.\n\n" + "\n".join(lines) + f"\n\nMachine: {_machine(data['machine'])}.\n")


def by_device(files: list[Path]) -> dict[str, list[Path]]:
    """The files grouped by where gpuillum ran (CPU first, then each GPU model): a kernel timed on
    a GPU and on a CPU are different rows, not a later run of the same one."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        gpu = json.loads(path.read_text())["machine"].get("gpu")
        groups.setdefault(f"GPU: {gpu['name']}" if gpu else "CPU", []).append(path)
    return dict(sorted(groups.items(), key=lambda item: (item[0] != "CPU", item[0])))


def full_runs(folder: Path, kind: str) -> list[Path]:
    """The ``kind`` result files in ``folder``, without ``--quick`` smoke runs."""
    return sorted(p for p in folder.glob(f"{kind}-*.json") if not p.name.endswith("-quick.json"))


if __name__ == "__main__":
    sys.exit(main())
