"""Write a :class:`~benches.model.SuiteResult` as JSON, markdown and a PNG plot.

:func:`write_reports` puts ``results.json``, ``results.md`` and
``results.png`` into one directory. The PNG has one row per scenario: latency
(p50 solid, p99 dashed, p50-p90 shaded) per contender against concurrency on
the left, throughput (ops/s, or MB/s for bulk scenarios) on the right.
Matplotlib's Agg canvas is used directly, so no display and no pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from benches.model import ContenderResult, LevelResult, ScenarioResult, SuiteResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "ReportFiles",
    "format_ms",
    "load_json",
    "render_markdown",
    "write_json",
    "write_markdown",
    "write_png",
    "write_reports",
]

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PNG_NAME = "results.png"


class ReportFiles(msgspec.Struct, frozen=True):
    json: str
    markdown: str
    png: str


# --------------------------------------------------------------------- JSON


def write_json(result: SuiteResult, path: Path) -> Path:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")
    return path


def load_json(path: Path) -> SuiteResult:
    return msgspec.json.decode(path.read_bytes(), type=SuiteResult)


# ----------------------------------------------------------------- markdown


def format_ms(value: float) -> str:
    """Milliseconds with about three significant digits, never in e-notation."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _times(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}x"
    return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _header(result: SuiteResult) -> list[str]:
    m = result.machine
    packages = ", ".join(f"{k} {v}" for k, v in m.packages.items())
    lines = [
        "# fabric benchmarks",
        "",
        f"- date: {result.started_at} (took {result.duration_seconds:.1f} s, "
        f"profile `{result.profile.name}`: levels {', '.join(map(str, result.profile.levels))}, "
        f"{result.profile.slices} x {result.profile.slice_seconds:g} s slices per level)",
        f"- machine: {m.cpu_model}, {m.cpus} CPUs, {m.memory_mb / 1024:.1f} GiB RAM, "
        f"{m.os}, kernel {m.kernel}, host `{m.hostname}`",
        f"- Python {m.python}, loop `{m.event_loop}`; {packages}",
    ]
    for name, version in m.servers.items():
        lines.append(f"- {name}: {version}")
    lines.extend(f"- note: {note}" for note in result.notes)
    lines.append("")
    return lines


def _level_row(contender: ContenderResult, level: LevelResult, bulk: bool, columns: int) -> str:
    if level.skipped:
        cells = [f"`{contender.name}`", contender.group, str(level.concurrency)]
        cells.append(f"skipped: {_cell(level.skipped)}")
        cells += [""] * (columns - len(cells))
        return "| " + " | ".join(cells) + " |"
    lat = level.latency
    cells = [
        f"`{contender.name}`",
        contender.group,
        str(level.concurrency),
        f"{level.ops:,}",
        _rate(level.throughput),
    ]
    if bulk:
        cells.append(f"{level.mb_per_s:,.0f}" if level.mb_per_s is not None else "-")
    cells += (
        [format_ms(lat.p50_ms), format_ms(lat.p90_ms), format_ms(lat.p99_ms)] if lat else ["-"] * 3
    )
    cells += [
        format_ms(lat.mean_ms) if lat else "-",
        _times(level.speedup_p50),
        _times(level.speedup_throughput),
        f"{level.errors:,}" + (f" ({_cell(level.first_error)})" if level.first_error else ""),
    ]
    return "| " + " | ".join(cells) + " |"


def _scenario_section(scenario: ScenarioResult) -> list[str]:
    bulk = any(level.mb_per_s is not None for c in scenario.contenders for level in c.levels)
    lines = [
        f"## `{scenario.name}` — {scenario.title}",
        "",
        scenario.description,
        "",
        f"Baseline: `{scenario.baseline}`. Speedups compare with it at the same concurrency "
        "(c); above 1x is better. Latency in ms.",
        "",
    ]
    head = ["contender", "group", "c", "ops", "ops/s"] + (["MB/s"] if bulk else [])
    head += ["p50", "p90", "p99", "mean", "p50 speedup", "ops/s speedup", "errors"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    for concurrency in scenario.levels:
        for contender in scenario.contenders:
            level = contender.level(concurrency)
            if level is not None:
                lines.append(_level_row(contender, level, bulk, len(head)))
    lines.append("")
    not_run = [c for c in scenario.contenders if c.status != "ok"]
    lines.extend(f"- `{c.name}`: {c.status}: {_cell(c.reason or '')}" for c in not_run)
    if not_run:
        lines.append("")
    lines.append("Contenders:")
    lines.append("")
    lines.extend(f"- `{c.name}` ({c.group}): {c.description}" for c in scenario.contenders)
    lines.append("")
    return lines


def render_markdown(result: SuiteResult) -> str:
    lines = _header(result)
    for scenario in result.scenarios:
        lines.extend(_scenario_section(scenario))
    return "\n".join(lines)


def write_markdown(result: SuiteResult, path: Path) -> Path:
    path.write_text(render_markdown(result))
    return path


# ---------------------------------------------------------------------- PNG


def write_png(result: SuiteResult, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scenarios = [s for s in result.scenarios if any(c.status == "ok" for c in s.contenders)]
    rows = max(1, len(scenarios))
    height = 3.8 * rows + 0.6
    fig = Figure(figsize=(13, height), dpi=100)
    FigureCanvasAgg(fig)
    # A fixed layout: constrained layout measures every tick label and costs seconds.
    axes = fig.subplots(rows, 2, squeeze=False)
    fig.subplots_adjust(
        left=0.07,
        right=0.98,
        top=1 - 0.8 / height,
        bottom=0.5 / height,
        hspace=0.9 / 3.8,
        wspace=0.18,
    )
    m = result.machine
    fig.suptitle(
        f"fabric benchmarks — {result.started_at} — {m.cpu_model}, {m.cpus} CPUs — "
        f"profile {result.profile.name}",
        fontsize=10,
        y=1 - 0.15 / height,
        va="top",
    )
    if not scenarios:
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
    for row, scenario in enumerate(scenarios):
        _plot_scenario(scenario, axes[row][0], axes[row][1])
    fig.savefig(path, format="png")
    return path


def _short_number(value: float, _pos: object = None) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _plot_scenario(scenario: ScenarioResult, lat_ax: Axes, tput_ax: Axes) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    bulk = any(level.mb_per_s is not None for c in scenario.contenders for level in c.levels)
    colors = [f"C{i % 10}" for i in range(len(scenario.contenders))]
    plotted = False
    for color, contender in zip(colors, scenario.contenders, strict=True):
        points = [lv for lv in contender.levels if lv.latency is not None and lv.ops > 0]
        if not points:
            continue
        plotted = True
        xs = [lv.concurrency for lv in points]
        p50 = [lv.latency.p50_ms for lv in points if lv.latency]
        p90 = [lv.latency.p90_ms for lv in points if lv.latency]
        p99 = [lv.latency.p99_ms for lv in points if lv.latency]
        lat_ax.plot(xs, p50, "o-", color=color, label=contender.name)
        lat_ax.plot(xs, p99, "v--", color=color, alpha=0.7)
        lat_ax.fill_between(xs, p50, p90, color=color, alpha=0.15)
        ys = [lv.mb_per_s or 0.0 for lv in points] if bulk else [lv.throughput for lv in points]
        tput_ax.plot(xs, ys, "o-", color=color, label=contender.name)
    levels = scenario.levels or [1]
    for ax in (lat_ax, tput_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrency (workers)")
        ax.grid(True, which="major", alpha=0.3)
        if plotted:
            ax.set_yscale("log")
            # Plain labels ("0.1", "20k"): the default log labels go through mathtext (slow).
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(_short_number))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.legend(fontsize=7, loc="best")
    lat_ax.set_ylabel("latency per op (ms)")
    lat_ax.set_title(f"{scenario.name}: latency (p50 solid, p99 dashed, band p50-p90)", fontsize=9)
    tput_ax.set_ylabel("MB/s" if bulk else "ops/s")
    tput_ax.set_title(f"{scenario.name}: throughput", fontsize=9)


# ---------------------------------------------------------------------- all


def write_reports(result: SuiteResult, out_dir: Path) -> ReportFiles:
    """Write the three files into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return ReportFiles(
        json=str(write_json(result, out_dir / JSON_NAME)),
        markdown=str(write_markdown(result, out_dir / MARKDOWN_NAME)),
        png=str(write_png(result, out_dir / PNG_NAME)),
    )
