"""The generated section of docs/benchmarks.md: figures (benchmarks/figures.py) in, Markdown out. Nothing measured here.

Two steps. :func:`summary` does every computation (medians, percentiles, ratios to the raw reference) and gives plain
numbers. The template ``report.md.j2`` does the wording and the number formats. The goals the report quotes come
from ``goals.toml``. So a change of wording touches the template only, a new goal the data file only.

``python -m benchmarks.report FIGURES.json [--write]`` renders figures saved by ``benchmarks.run --save-figures``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import jinja2

from benchmarks.figures import Figures

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
TEMPLATE = "report.md.j2"
GOALS = HERE / "goals.toml"
BEGIN, END = "<!-- BEGIN benchmarks/run.py: generated, do not edit by hand -->", "<!-- END benchmarks/run.py -->"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def size_label(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def load_goals(path: Path = GOALS) -> dict[str, Any]:
    with path.open("rb") as file:
        return tomllib.load(file)


def summary(fig: Figures) -> dict[str, Any]:
    """Every number the report shows, computed once; a section that was not run is None."""
    out: dict[str, Any] = {"fig": fig, "dispatch": None, "queues": None, "bridge": None, "payload": None}
    if fig.dispatch:
        reference = fig.dispatch[0]
        fg0, bg0 = median(reference.fg), median(reference.bg)
        rows = []
        for c in fig.dispatch:
            fg, bg = median(c.fg), median(c.bg)
            rows.append(
                {
                    "label": c.label,
                    "fg": fg,
                    "fg_ratio": fg / fg0,
                    "per_process": fg / fg0 / c.processes,
                    "bg": bg,
                    "bg_ratio": bg / bg0,
                    "p50": percentile(c.latency, 0.5) * 1e3,
                    "p95": percentile(c.latency, 0.95) * 1e3,
                    "p99": percentile(c.latency, 0.99) * 1e3,
                    "samples": len(c.latency),
                    "cpu_us": median(c.cpu) * 1e6 if c.cpu else None,
                }
            )
        by = {c.key: median(c.fg) for c in fig.dispatch}
        out["dispatch"] = {
            "rows": rows,
            "raw_share": by["ij1"] / fg0,
            "vs_pygearman": by["ij1"] / by["pyg"],
            "vs_process_per_job": by["ij1"] / by["cli"],
            "scale": by["ijN"] / by["ij1"],
            "raw_scale": by["raw2"] / fg0,
            "baseline": _vs_baseline(fig),
        }
    if fig.queues:
        base = next((q.complete for q in fig.queues if q.queue == "builtin" and q.error is None), None)
        measured = {q.queue: q for q in fig.queues if q.error is None}
        wal, journal = measured.get("sqlite-wal"), measured.get("sqlite")
        out["queues"] = {
            "rows": [{"row": q, "vs_builtin": q.complete / base if base else None} for q in fig.queues],
            "wal": None
            if wal is None or journal is None
            else {"submit": wal.submit / journal.submit, "complete": wal.complete / journal.complete},
        }
    if fig.bridge:
        bridge, cli = median(fig.bridge["bridge_cat"]), median(fig.bridge["cli_cat"])
        out["bridge"] = {
            "bridge": bridge,
            "cli": cli,
            "bridge_ms": 1e3 / bridge,
            "cli_ms": 1e3 / cli,
            "overhead_ms": 1e3 / bridge - 1e3 / cli,
            "ratio": bridge / cli,
        }
    if fig.payload:
        out["payload"] = [
            {
                "row": r,
                "size": size_label(r.size),
                "raw_mb_s": r.raw * r.size / 1e6,
                "ij_raw_ratio": r.ij_raw / r.raw,
                "ij_json_ratio": r.ij_json / r.raw,
            }
            for r in fig.payload
        ]
    return out


def _vs_baseline(fig: Figures) -> list[dict[str, Any]]:
    """This tree's pools against the baseline's (1 process, and one per CPU), round by round (all ran in every
    round, interleaved): the median of the per-round ratios, so that the machine's drift between rounds cancels
    out. Empty without a baseline."""
    by = {c.key: c for c in fig.dispatch}
    out = []
    for key in ("ij1", "ijN"):
        ours, base = by.get(key), by.get(f"{key}base")
        if ours is None or base is None:
            continue
        out.append(
            {
                "label": base.label,
                "fg": median([a / b for a, b in zip(ours.fg, base.fg, strict=True)]),
                "bg": median([a / b for a, b in zip(ours.bg, base.bg, strict=True)]),
                "p50": percentile(ours.latency, 0.5) / percentile(base.latency, 0.5),
                "cpu": median([a / b for a, b in zip(ours.cpu, base.cpu, strict=True)])
                if ours.cpu and base.cpu
                else None,
                "rounds": min(len(ours.fg), len(base.fg)),
            }
        )
    return out


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["fmt"] = _fmt
    return env


def _fmt(value: Any, spec: str) -> str:
    """``{{ value|fmt(",.0f") }}``: Python's format spec, as in an f-string."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # a StrictUndefined raises here, naming what is missing (format() would not)
    return format(value, spec)


def render(fig: Figures, goals: dict[str, Any] | None = None) -> str:
    """The generated section, markers included, for these figures and goals (default: goals.toml)."""
    template = environment().get_template(TEMPLATE)
    try:
        return template.render(begin=BEGIN, end=END, goals=load_goals() if goals is None else goals, **summary(fig))
    except jinja2.UndefinedError as exc:
        raise ValueError(f"{TEMPLATE}: {exc.message} (a goal missing from {GOALS.name}?)") from exc


def write_doc(section: str, doc: Path = DOC) -> None:
    """Replace the generated section of ``doc`` (or append it), leaving the hand-written prose around it."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", type=Path, help="figures saved by python -m benchmarks.run --save-figures")
    parser.add_argument("--write", action="store_true", help=f"replace the generated section of {DOC.name}")
    options = parser.parse_args()
    text = render(Figures.load(options.figures))
    print(text)
    if options.write:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
