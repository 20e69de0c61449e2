"""Write a :class:`~benches.soak.model.SoakReport` as ``soak.json`` and ``soak.md``."""

from __future__ import annotations

from pathlib import Path

import msgspec

from benches.soak.model import FaultResult, SoakReport

__all__ = ["load_json", "render_markdown", "write_reports"]

JSON_NAME = "soak.json"
MARKDOWN_NAME = "soak.md"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}".replace(".00", "")


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(f: FaultResult) -> str:
    leases = "-" if f.leases_leaked is None else str(f.leases_leaked)
    if f.transactions_open:
        leases += f" (+{f.transactions_open} txn)"
    rss = " / ".join(_mib(v) for v in (f.rss_before_mb, f.rss_peak_mb, f.rss_final_mb))
    cells = [
        f"`{f.name}`",
        f"**{f.outcome}**",
        f"{f.acknowledged:,} / {f.invocations:,}",
        str(sum(r.present for r in f.rows)),
        str(f.lost),
        str(f.duplicated),
        leases,
        rss,
        _num(f.recovery_seconds, " s"),
        "yes" if f.host_alive else "**no**",
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: SoakReport) -> str:
    m = report.machine
    lines = [
        "# fabric reliability suite",
        "",
        f"- date: {report.started_at} (took {report.duration_seconds:.0f} s, "
        f"profile `{report.profile.name}`, {report.profile.workers} workers)",
        f"- machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, {m.get('memory', '?')}; "
        f"Python {m.get('python', '?')}",
    ]
    lines += [f"- {k}: {v}" for k, v in m.items() if k.startswith("server ")]
    lines += [f"- note: {n}" for n in report.notes]
    lines += [
        "",
        "| fault | outcome | acked / invocations | rows | lost | dup | leases leaked "
        "| RSS MiB before / peak / final | recovery | host alive |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(f) for f in report.faults]
    lines.append("")
    for f in report.faults:
        lines.append(f"## `{f.name}` — {f.title}")
        lines.append("")
        if f.problems:
            lines += [f"- problem: {_cell(p)}" for p in f.problems]
        else:
            lines.append("- held")
        if f.failed:
            lines.append(f"- {f.failed} invocations failed; first: `{_cell(f.first_error or '')}`")
        for r in f.rows:
            lines.append(
                f"- {r.database}: {r.acknowledged} acknowledged, {r.present} rows, "
                f"{r.lost} lost, {r.duplicated} duplicated, "
                f"{r.unacknowledged_present} unacknowledged present, {r.phantom} phantom"
            )
        if f.details:
            lines.append("- " + ", ".join(f"{k} = {_cell(str(v))}" for k, v in f.details.items()))
        lines.append("")
    return "\n".join(lines)


def write_reports(report: SoakReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    md_path = out_dir / MARKDOWN_NAME
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def load_json(path: Path) -> SoakReport:
    return msgspec.json.decode(path.read_bytes(), type=SoakReport)
