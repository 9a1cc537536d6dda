"""What every bench tool shows and writes: tables (text and Markdown), charts, results files.

Pure functions of plain data (a header, rows of strings, series of numbers):
each tool decides what its rows and series are, this module how they look.
The charts need matplotlib (``pip install -e '.[bench]'``); without it a chart
function returns why there is no chart and the run goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import log

NO_MATPLOTLIB = "matplotlib is not installed (pip install -e '.[bench]'): no chart"

# --- tables -------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]], *, left: int = 2) -> list[str]:
    """A Markdown table, one line each; the first column is shown only where it changes,
    the first ``left`` columns are left-aligned and the others right-aligned. An empty
    heading (the corner of a two-way table) is one space."""
    lines = [
        "|" + "|".join(f" {h} " if h else " " for h in header) + "|",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|",
    ]
    previous = None
    for row in rows:
        shown = ["" if row[0] == previous else row[0], *row[1:]]
        previous = row[0]
        lines.append("| " + " | ".join(shown) + " |")
    return lines


def text_table(header: list[str], rows: list[list[str]], *, grouped: bool = True) -> str:
    """Columns padded to their widest cell, two spaces apart, the first two left-aligned.
    ``grouped``: the first column shown only where it changes, a blank line before each
    new value."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(header)]
    previous = None
    for row in rows:
        shown = row
        if grouped:
            if previous is not None and row[0] != previous:
                lines.append("")
            shown = ["" if row[0] == previous else row[0], *row[1:]]
            previous = row[0]
        lines.append(line(shown))
    return "\n".join(lines)


def fixed_width(header: list[str], rows: list[list[str]], widths: list[int]) -> str:
    """Columns right-aligned to at least ``widths``, one space apart."""
    return "\n".join(
        " ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)) for row in [header, *rows]
    )


def number(value: object, digits: int = 0) -> str:
    """``1,234.5`` with ``digits`` decimals; ``-`` for nothing (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def provenance_line(prov: dict[str, Any]) -> str:
    """One line for a table's header: the commit, and a warning for a dirty tree."""
    line = f"edgerq {prov['commit'][:10]} ({prov['revision']}), {prov['date']}"
    if prov.get("build"):
        line += f", {prov['build']}"
    if prov["dirty"]:
        line += "; DIRTY TREE: uncommitted changes were measured, no commit has this code"
    return line


def measured_on(meta: dict[str, Any]) -> str:
    """The start of a results file's first line: when, and on what machine."""
    m = meta["machine"]
    return (
        f"Measured {meta['date']} on {m['cores']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
    )


def markdown_report(
    paragraphs: list[str],
    header: list[str],
    rows: list[list[str]],
    bullets: Sequence[str] = (),
) -> str:
    """A results file's Markdown: paragraphs, the table, then a list (skipped paths, notes)."""
    out = [line for paragraph in paragraphs for line in (paragraph, "")]
    out += markdown_table(header, rows)
    if bullets:
        out += ["", *(f"- {b}" for b in bullets)]
    return "\n".join(out) + "\n"


# --- charts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bars:
    """One series of a bar chart: a bar per category, where its value is not None."""

    label: str
    colour: str
    values: list[float | None]


@dataclass(frozen=True)
class BarPanel:
    series: list[Bars]
    ylabel: str
    value_format: str
    """printf-style format of the number written on each bar."""
    log: bool = False
    reference: float | None = None
    """A dashed line at this value (1.0: as good as direct)."""
    title: str | None = None


def bar_chart(
    path: Path,
    categories: list[str],
    panels: list[BarPanel],
    *,
    size: tuple[float, float] = (11, 8),
    dpi: int = 110,
) -> str | None:
    """Panels one above the other, the series' bars side by side in each category.
    Writes a PNG; returns why not, or None."""
    plt = _pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    fig, axes = plt.subplots(len(panels), 1, figsize=size, constrained_layout=True, squeeze=False)
    column = [row[0] for row in axes]
    for axis, panel in zip(column, panels, strict=True):
        width = 0.8 / max(1, len(panel.series))
        for i, series in enumerate(panel.series):
            offset = (i - (len(panel.series) - 1) / 2) * width
            shown = [(j + offset, v) for j, v in enumerate(series.values) if v is not None]
            bars = axis.bar(
                [x for x, _ in shown],
                [v for _, v in shown],
                width,
                label=series.label,
                color=series.colour,
            )
            axis.bar_label(bars, fmt=panel.value_format, fontsize=7)
    for axis in column:
        axis.set_xticks(range(len(categories)), categories, fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    for axis, panel in zip(column, panels, strict=True):
        if panel.reference is not None:
            axis.axhline(panel.reference, color="black", linewidth=0.8, linestyle="--")
        if panel.log:
            axis.set_yscale("log")
        axis.set_ylabel(panel.ylabel)
        if panel.title is not None:
            axis.set_title(panel.title, fontsize=10)
        axis.legend(fontsize=8)
    _save(plt, fig, path, dpi)
    return None


@dataclass(frozen=True)
class Curve:
    """A distribution: ``values`` at the cumulative shares ``shares`` (both ascending)."""

    label: str
    colour: str
    values: list[float]
    shares: list[float]


@dataclass(frozen=True)
class CdfPanel:
    title: str
    curves: list[Curve]


CDF_TICKS = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]


def cdf_chart(
    path: Path,
    grid: list[list[CdfPanel]],
    title: str,
    *,
    xlabel: str,
    ylabel: str,
    row_height: float = 3.2,
    width: float = 11,
    dpi: int = 100,
) -> str | None:
    """Rows of panels, each a set of CDFs: values on a log scale, shares on a logit
    scale (the tail spread out). Panels of one row share their value axis. Writes a
    PNG; returns why not, or None."""
    plt = _pyplot()
    try:
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        plt = None
    if plt is None:
        return NO_MATPLOTLIB
    fig, axes = plt.subplots(
        len(grid),
        len(grid[0]) if grid else 1,
        figsize=(width, row_height * len(grid)),
        squeeze=False,
        constrained_layout=True,
        sharex="row",
    )
    for r, panels in enumerate(grid):
        for c, panel in enumerate(panels):
            axis = axes[r][c]
            for curve in panel.curves:
                axis.plot(curve.values, curve.shares, label=curve.label, color=curve.colour)
            axis.set_xscale("log")
            axis.set_yscale("logit")
            axis.set_ylim(0.01, 0.9995)
            axis.set_yticks(CDF_TICKS, [f"{q:.1%}".replace(".0%", "%") for q in CDF_TICKS])
            axis.yaxis.set_minor_formatter(NullFormatter())
            axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.grid(alpha=0.3, which="both")
            axis.set_title(panel.title, fontsize=9)
            axis.set_xlabel(xlabel, fontsize=8)
            axis.set_ylabel(ylabel, fontsize=8)
            axis.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    _save(plt, fig, path, dpi)
    return None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path, dpi: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


# --- results files ------------------------------------------------------------------------


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def write_results(
    base: Path, data: object, markdown: str, chart: Callable[[Path], str | None]
) -> list[Path]:
    """``BASE.json``, ``BASE.md`` and the chart ``BASE.png`` (``chart`` draws it into the
    path given, or returns why not: logged). Returns the files written."""
    wrote = [base.with_suffix(".json"), base.with_suffix(".md")]
    write_json(wrote[0], data)
    write_atomic(wrote[1], markdown)
    problem = chart(base.with_suffix(".png"))
    if problem:
        log(problem)
    else:
        wrote.append(base.with_suffix(".png"))
    return wrote


def shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it."""
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def wrote_line(paths: list[Path]) -> str:
    return "wrote " + ", ".join(shown(p) for p in paths)
