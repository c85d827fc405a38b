"""``gpuillum compare``: every candidate method on the same groups, scored side by side, ranked.

For each group (plate x channel, a folder's or a stack's channel) the methods that estimate a
model per group share one reading pass over all the group's images (gpuillum.methods.auto's
reduction); per-image methods correct the sample only. Every candidate is then scored on the
same sample of images (gpuillum.qc.candidates.score), the models are saved under
OUT/functions/<candidate>/ (``gpuillum apply --functions`` takes them), and OUT/compare.json,
OUT/compare.html (self-contained) and one PNG per group show the ranking and the blog's Figure 6:
each method's corrected image at matched brightness.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from ..errors import InvalidValue


def _reduce_group(group, settings, executor):
    """The auto reduction of every group candidate over all the group's images (batches merged in order)."""
    from ..job.estimate import OrderedMerge, reduce_batch
    from ..job.executor import fixed_batches
    from ..methods import get_method

    merged = OrderedMerge()
    results = executor.map(reduce_batch, list(enumerate(fixed_batches(group.records))), get_method("auto"), settings,
                           group.info, group.reader, executor.device_spec, "skip")
    for (index, _batch), (partial, _skipped, _used) in results:
        merged.push(index, partial)
    return merged.result()


def compare_group(group, candidates, executor, device, functions_dir: Path, figure_path: Path) -> dict:
    """Score every candidate on one group; save the models and the methods panel; returns the group's ranking."""
    from ..methods.auto import AutoSettings, evaluate
    from .candidates import choose, corrected_sample, keep_sample, score
    from .collect import SAMPLE_IMAGES, read_images, safe_stem, sample
    from .figures import methods_panel
    from .maps import group_maps, shrink

    chosen_records, raw = read_images(sample(group.records, SAMPLE_IMAGES), group.reader)
    if not raw:
        raise InvalidValue(f"{group.label}: no readable image")
    small: list = []
    for image in raw:
        keep_sample(small, image)
    results = {}
    raw_level = group_maps(small).level
    group_candidates = [c for c in candidates if c.scope == "group"]
    if group_candidates:
        settings = AutoSettings(",".join(c.label for c in group_candidates))
        reduction = _reduce_group(group, settings, executor)
        for entry in evaluate(settings, reduction, group.info, device):
            if "model" in entry:
                corrected = corrected_sample(entry["model"], small)
                entry.update(corrected=corrected, **score(corrected))
                path = functions_dir / safe_stem([entry["label"]]) / (group.model_stem() + ".npz")
                path.parent.mkdir(parents=True, exist_ok=True)
                entry["model"].save(path)
                entry["model_file"] = str(path)
            results[entry["label"]] = entry
    for candidate in candidates:
        if candidate.scope != "group":
            corrected = [shrink(candidate.method.correct(candidate.settings, image, output_dtype="float32")) for image in raw]
            results[candidate.label] = {"label": candidate.label, "corrected": corrected, **score(corrected, raw_level)}
    scored = {label: entry for label, entry in results.items() if "corrected" in entry}
    best, why = choose(scored) if scored else (None, "every candidate failed")
    ranking = sorted(scored, key=lambda label: (scored[label]["score"], scored[label]["gain"]))
    middle = len(small) // 2
    methods_panel({"raw": small[middle], **{label: scored[label]["corrected"][middle] for label in ranking}}, figure_path,
                  title=f"{group.label}: {chosen_records[middle].name}, each brightened on its own background")
    rows = []
    for rank, label in enumerate(ranking, 1):
        entry = scored[label]
        metrics = entry["metrics"]
        rows.append({"method": label, "rank": rank, "score": round(entry["score"], 6), "gain_cv": round(entry["gain"], 6),
                     "background_cv": metrics["background"]["cv"], "centre_corner": metrics["background"]["centre_corner"],
                     "contrast": metrics["contrast"], "model_file": entry.get("model_file")})
    failed = [{"method": label, "error": entry["error"]} for label, entry in results.items() if "error" in entry]
    return {"group": group.label, "chosen": best, "why": why, "ranking": rows, "failed": failed,
            "images_sampled": len(small), "figure": str(figure_path)}


def compare(input_path, out_dir, *, methods: str | None = None, pattern=None, layout=None, loaddata=None,
            ignore_unmatched=False, device="auto", threads=None, log=None) -> dict:
    """Run every method of ``methods`` (comma-separated candidate names, see gpuillum.qc.candidates;
    None: the defaults of ``--method auto``) on INPUT's groups and write the comparison under OUT.

    Returns
    -------
    dict: ``{"groups": [{group, chosen, why, ranking: [{method, rank, score, ...}], failed}], "report": path}``

    Examples
    --------
    >>> compare("PLATE", "OUT", methods="jump,polynomial,cdrp", layout="gpuillum")["groups"][0]["chosen"]
    """
    from ..backend import resolve_device
    from ..job import plan_plate
    from ..job.executor import open_executor
    from ..job.groups import make_groups
    from ..job.spec import as_path, default_threads
    from .candidates import parse_names

    started = time.perf_counter()
    candidates = parse_names(methods)
    out = as_path(out_dir, "OUT")
    plan = plan_plate(as_path(input_path, "INPUT"), pattern=pattern, layout=layout, loaddata=loaddata,
                      ignore_unmatched=ignore_unmatched)
    if plan.problems:
        raise InvalidValue(plan.problems[0].message)
    groups = make_groups(plan, "group", unit_floats=True)
    if not groups:
        raise InvalidValue(f"{input_path}: no usable images found")
    device = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with open_executor(workers=1, scheduler=None, threads=threads or default_threads(), device=device) as executor:
        for group in groups:
            from .collect import safe_stem

            result = compare_group(group, candidates, executor, device, out / "functions",
                                   out / f"compare_{safe_stem(group.key)}.png")
            results.append(result)
            if log is not None:
                log(f"compare {group.label}: best {result['why']}")
    report = write_compare_report(out, results, [c.label for c in candidates])
    summary = {"groups": results, "report": str(report), "seconds": round(time.perf_counter() - started, 3)}
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def write_compare_report(out: Path, results: list, labels: list) -> Path:
    """OUT/compare.html: per group the ranking table and the methods panel, images embedded."""
    from ..io.atomic import atomic_write_bytes
    from .report import STYLE, _embed, _value

    sections = []
    for result in results:
        head = "<tr><th>rank</th><th>method</th><th>score (background peak-to-valley after)</th><th>cells' gain CV</th>" \
               "<th>background CV</th><th>centre/corner</th><th>contrast</th></tr>"
        rows = "".join(f"<tr><td>{r['rank']}</td><td>{html.escape(r['method'])}</td><td>{_value(r['score'])}</td>"
                       f"<td>{_value(r['gain_cv'])}</td><td>{_value(r['background_cv'])}</td><td>{_value(r['centre_corner'])}</td>"
                       f"<td>{_value(r['contrast'])}</td></tr>" for r in result["ranking"])
        failed = "".join(f'<div class="flag">{html.escape(f["method"])} failed: {html.escape(f["error"])}</div>'
                         for f in result["failed"])
        sections.append(f"<h2>{html.escape(result['group'])}</h2><div class='verdict good'>best: {html.escape(result['why'])}</div>"
                        f"{failed}<table>{head}{rows}</table>{_embed(Path(result['figure']))}")
    text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>gpuillum compare</title><style>{STYLE}</style></head>"
            f"<body><h1>gpuillum compare: {html.escape(', '.join(labels))}</h1>"
            "<p>Lower score is better: the shading a person would still see in the background after brightening. "
            "Each picture is brightened on its own background (matched brightness).</p>"
            + "".join(sections) + "</body></html>\n")
    path = out / "compare.html"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
