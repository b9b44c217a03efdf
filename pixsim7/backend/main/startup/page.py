"""An app's startup as one self-contained HTML page: a timeline (a bar per step, by phase, with
its policy, status, duration and counts; the milestones) and the plan graph (each step with
the resources it needs and provides). No script and no request: styles are inline, so the page
opens offline, from a CI artifact or a mail, in any browser. A failed or degraded step is red
or amber, and listed at the top.

Also the plan as text (`plan_view`): a table, a Mermaid flowchart (which GitHub and GitLab draw
in Markdown) or JSON, as `check --graph --format` prints it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pixsim7.backend.main.startup.profiles import PROFILES
from pixsim7.backend.main.startup.runner import Plan
from pixsim7.backend.main.startup.timeline import StartupTimeline
from pixsim7.backend.main.startup.trace import write_text
from pixsim7.backend.main.state import state_of

PHASES = ("build", "startup", "shutdown")
STATUS_COLOURS = {"ok": "#2e7d32", "degraded": "#ef8f00", "failed": "#c62828",
                  "skipped": "#9e9e9e"}
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;margin-bottom:12px}
.alert{background:#fdecea;border:1px solid #c62828;padding:8px 12px;border-radius:4px}
.calm{background:#e8f5e9;border:1px solid #2e7d32;padding:8px 12px;border-radius:4px}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}
td.name{font-family:ui-monospace,monospace;white-space:nowrap}
td.lane{width:45%;position:relative}
.track{position:relative;height:16px;background:#f3f3f3;border-radius:3px}
.bar{position:absolute;top:0;height:16px;min-width:2px;border-radius:3px}
.status{font-weight:600;text-transform:uppercase;font-size:12px}
tr.failed td{background:#fdecea}tr.degraded td{background:#fff4e0}
.res{font-family:ui-monospace,monospace;font-size:12px;background:#eef;border-radius:3px;
padding:0 4px;margin:1px;display:inline-block}
.milestones{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;
background:#fff;border:1px solid #e0e0e0;padding:8px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{_e(key)}={_e(value)}" for key, value in counts.items())


def _timeline_rows(timeline: StartupTimeline) -> list[str]:
    timed = [r for r in timeline.records if r.started is not None]
    origin = min((r.started for r in timed), default=0.0)
    end = max((r.started - origin + r.duration_ms / 1000 for r in timed), default=0.0)
    span = end or 1.0
    rows = []
    for phase in PHASES:
        records = [r for r in timeline.records if r.phase == phase]
        if not records:
            continue
        rows.append(f'<tr><th colspan="6">{_e(phase)}</th></tr>')
        for record in records:
            start = ((record.started or origin) - origin) / span * 100
            width = record.duration_ms / 1000 / span * 100
            colour = STATUS_COLOURS.get(record.status, "#607d8b")
            error = record.error.split(":", 1)[0] if record.error else ""
            rows.append(
                f'<tr class="step {_e(record.status)}" data-phase="{_e(phase)}" '
                f'data-step="{_e(record.step)}" data-status="{_e(record.status)}">'
                f'<td class="name">{_e(record.step)}</td>'
                f'<td>{_e(record.policy)}</td>'
                f'<td class="status" style="color:{colour}">{_e(record.status)}</td>'
                f'<td>{record.duration_ms:.1f} ms</td>'
                f'<td class="lane"><div class="track"><div class="bar" style="left:'
                f'{start:.2f}%;width:{width:.2f}%;background:{colour}"></div></div></td>'
                f"<td>{_counts(record.counts)}{' ' + _e(error) if error else ''}</td></tr>")
    return rows


def _graph_rows(plan: Plan) -> list[str]:
    return [
        f'<tr class="node" data-node="{_e(row["step"])}"><td class="name">{_e(row["step"])}'
        f'</td><td>{_e(row["policy"])}</td>'
        f'<td>{"".join(f"<span class=res>{_e(n)}</span>" for n in row["needs"]) or "-"}</td>'
        f'<td>{"".join(f"<span class=res>{_e(p)}</span>" for p in row["provides"]) or "-"}'
        f"</td></tr>"
        for row in plan.graph()]


def startup_page(timeline: StartupTimeline, plan: Plan | None,
                 lifecycle: str | None = None) -> str:
    """The page for `timeline` (and `plan`, the graph, when given)."""
    trouble = [r for r in timeline.records if r.status in ("failed", "degraded")]
    if trouble:
        banner = ('<p class="alert" id="trouble">' + "; ".join(
            f"{_e(r.phase)} <b>{_e(r.step)}</b>: {_e(r.status)}"
            + (f" ({_e(r.error.split(':', 1)[0])})" if r.error else "") for r in trouble)
            + "</p>")
    else:
        banner = '<p class="calm" id="trouble">every step ok or skipped</p>'
    milestones = "\n".join(
        _e(f"{r.phase} {r.step}: {r.status} [{r.policy}] " + " ".join(
            f"{k}={v}" for k, v in r.counts.items())) for r in timeline.records)
    graph = ""
    if plan is not None:
        graph = ("<h2>Plan</h2><p class=meta>given: " + "".join(
            f"<span class=res>{_e(g)}</span>" for g in plan.given) + "</p>"
            '<table id="plan"><tr><th>step</th><th>policy</th><th>needs</th><th>provides'
            "</th></tr>" + "".join(_graph_rows(plan)) + "</table>")
    profile = timeline.profile or "api"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>pixsim7 {_e(profile)} startup</title>"
        # Nothing may load from elsewhere, even if a value slipped through unescaped.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>pixsim7 {_e(profile)} startup</h1>"
        f'<p class=meta>app {_e(timeline.app_id or "-")}'
        f'{f" · lifecycle {_e(lifecycle)}" if lifecycle else ""}'
        f" · {len(timeline.records)} steps</p>{banner}"
        '<h2>Timeline</h2><table id="timeline"><tr><th>step</th><th>policy</th>'
        "<th>status</th><th>took</th><th>when</th><th>counts</th></tr>"
        + "".join(_timeline_rows(timeline)) + "</table>"
        + graph
        + f'<h2>Milestones</h2><pre class="milestones">{milestones}</pre></body></html>')


def write_page(timeline: StartupTimeline, plan: Plan | None, path: Path | str,
               lifecycle: str | None = None) -> Path:
    """Write the page to `path`, as a trace is written (a new private file renamed over it)."""
    return write_text(startup_page(timeline, plan, lifecycle), path)


def app_page(app: FastAPI) -> str:
    """The page of a started (or stopped) app: its timeline, its profile's plan, its
    lifecycle."""
    state = state_of(app)
    profile = PROFILES.get(state.profile or "api")
    return startup_page(state.startup, profile.plan if profile else None, state.lifecycle)


def graph_table(plan: Plan) -> str:
    """The plan as a table: each step in order with its policy, needs and provides."""
    rows = [("step", "policy", "needs", "provides")]
    rows += [(row["step"], row["policy"], ", ".join(row["needs"]) or "-",
              ", ".join(row["provides"]) or "-") for row in plan.graph()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
                     + "  " + row[3] for row in rows)


def plan_view(profile: str, plan: Plan, form: str = "text") -> str:
    """The plan of `profile` as `check --graph --format` prints it: text, mermaid or json."""
    if form == "mermaid":
        return mermaid(plan)
    if form == "json":
        return json.dumps({"profile": profile, "given": list(plan.given),
                           "steps": plan.graph()}, indent=2) + "\n"
    return f"profile {profile}: given {', '.join(plan.given)}\n{graph_table(plan)}\n"


def mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart: steps in order, and each resource from the step that
    provides it to each step that needs it (given ones from `given`)."""
    def node(name: str) -> str:
        return "s_" + "".join(ch if ch.isalnum() else "_" for ch in name)

    lines = ["flowchart TD", '    given(["given: ' + ", ".join(plan.given) + '"])']
    provider = {key: "given" for key in plan.given}
    for row in plan.graph():
        lines.append(f'    {node(row["step"])}["{row["step"]}<br/><small>'
                     f'{row["policy"]}</small>"]')
    for row in plan.graph():
        for need in row["needs"]:
            name = need.rstrip("?")
            source = provider.get(name)
            if source is not None:
                arrow = "-.->" if need.endswith("?") else "-->"
                lines.append(f"    {source} {arrow}|{name}| {node(row['step'])}")
        for provided in row["provides"]:
            provider[provided.split(" ")[0]] = node(row["step"])
    return "\n".join(lines) + "\n"
