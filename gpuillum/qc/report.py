"""The QC report as one self-contained HTML file: verdicts, flags, metrics and pictures, no network.

Every picture is embedded as a ``data:image/png;base64`` URI and the style is inline, so the
file can be mailed, archived or opened offline. :func:`write_report` takes the groups' QC
(gpuillum.qc.group.group_qc) and the PNG paths of each group.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..io.atomic import atomic_write_bytes

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
.verdict{padding:8px 12px;border-radius:6px;margin:6px 0;font-weight:600}
.yes{background:#fde2e1;color:#8a1c14}.no{background:#e3f4e4;color:#1d5e25}.unknown{background:#eee;color:#444}
.good{background:#e3f4e4;color:#1d5e25}.bad{background:#fde2e1;color:#8a1c14}
.flag{background:#b3261e;color:#fff;padding:6px 10px;border-radius:4px;margin:4px 0;font-weight:600}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}.evidence{font-size:13px;color:#444}
"""


def _embed(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _metrics_table(metrics: dict) -> str:
    before, after = metrics.get("before") or {}, metrics.get("after")
    rows = [("background peak-to-valley", ("background", "peak_to_valley")), ("background CV", ("background", "cv")),
            ("background centre/corner", ("background", "centre_corner")), ("background level", ("background", "level")),
            ("cells' gain peak-to-valley", ("gain", "peak_to_valley")), ("cells' gain CV", ("gain", "cv")),
            ("contrast", ("contrast",)), ("noise floor (peak-to-valley)", ("noise_floor",))]

    def pick(source, keys):
        for key in keys:
            source = None if source is None else source.get(key)
        return source

    head = "<tr><th>metric</th><th>before</th>" + ("<th>after</th>" if after is not None else "") + "</tr>"
    body = "".join(f"<tr><td>{name}</td><td>{_value(pick(before, keys))}</td>"
                   + (f"<td>{_value(pick(after, keys))}</td>" if after is not None else "") + "</tr>" for name, keys in rows)
    extra = []
    for title, part in (("model", metrics.get("model")), ("output", metrics.get("output"))):
        if part:
            items = "".join(f"<tr><td>{html.escape(k)}</td><td>{_value(v)}</td></tr>" for k, v in part.items()
                            if not isinstance(v, (dict, list)))
            extra.append(f"<table><tr><th>{title}</th><th>value</th></tr>{items}</table>")
    return f"<table>{head}{body}</table>" + "".join(extra)


def _verdict(label: str, value, why: str, good_when) -> str:
    if value is None:
        css, word = "unknown", "unknown"
    else:
        css = ("good" if value == good_when else "bad") if good_when is not None else ("yes" if value else "no")
        word = "yes" if value else "no"
    return f'<div class="verdict {css}">{label}: {word}</div><div class="evidence">{html.escape(why)}</div>'


def group_section(qc: dict, pictures: list) -> str:
    """The HTML of one group: verdicts, flags in red, the metrics table and the pictures."""
    parts = [f"<h2>{html.escape(qc['group'])}</h2>",
             _verdict("Correction needed", qc["needed"], qc["evidence"]["needed"], None),
             _verdict("Did it work", qc["worked"], qc["evidence"]["worked"], True)]
    if "auto" in qc:
        parts.append(f"<p class=evidence><b>--method auto</b> chose {html.escape(qc['auto']['why'])}</p>")
    parts += [f'<div class="flag">PROBLEM: {html.escape(flag["text"])}</div>' for flag in qc["flags"]]
    metrics = qc["metrics"]
    if metrics:  # none for a group whose images could not be measured (the evidence says why)
        parts.append(f"<p class=evidence>{metrics['images_sampled']} of {metrics['images_in_group']} images measured.</p>")
        parts.append(_metrics_table(metrics))
    parts += [_embed(path) for path in pictures if Path(path).is_file()]
    return "\n".join(parts)


def write_report(path, title: str, groups: list, pictures: dict, *, intro: str = "", extra_html: str = "") -> Path:
    """Write the self-contained HTML report; ``pictures``: {group label: [PNG paths]}.

    Examples
    --------
    >>> write_report("OUT/qc/report.html", "gpuillum QC", qcs, {"plate P1, channel DNA": [png]})
    """
    sections = "\n".join(group_section(qc, pictures.get(qc["group"], [])) for qc in groups)
    summary = "".join(f"<tr><td>{html.escape(qc['group'])}</td><td>{_value(qc['needed'])}</td><td>{_value(qc['worked'])}</td>"
                      f"<td>{len(qc['flags'])}</td></tr>" for qc in groups)
    text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{intro}</p>"
            f"<table><tr><th>group</th><th>correction needed</th><th>worked</th><th>problems</th></tr>{summary}</table>"
            f"{extra_html}{sections}</body></html>\n")
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def public(qc: dict) -> dict:
    """A group's QC without its internal (non-JSON) parts."""
    return {key: value for key, value in qc.items() if not key.startswith("_")}


def write_json(path, groups: list, **extra) -> Path:
    """``{"groups": [...], **extra}`` as JSON (the ``gpuillum qc --json`` format)."""
    atomic_write_bytes(path, (json.dumps({"groups": [public(qc) for qc in groups], **extra}, indent=2, default=str) + "\n").encode())
    return Path(path)
