"""The console's pages as HTML strings, rendered on the server: pure functions of what the API server returned.

Everything a user wrote (titles, reasons, messages, outputs, names) goes through `esc`: HTML-escaped after
steadfast.text.shown has made invisible and direction-changing characters visible. No inline script or style
(the Content-Security-Policy forbids them): behaviour is in /static/console.js, looks in /static/console.css.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import yaml

from steadfast.api.kinds import DECIDED_BY, KINDS, REQUESTED_BY, SCHEDULE_KINDS, TEMPLATES
from steadfast.api.template import SagaTemplateSpec
from steadfast.console.kube import Identity, Overview, Page
from steadfast.fleet.phases import PHASES
from steadfast.templates.cli import HEADERS, parameter_rows
from steadfast.text import shown

PAUSED_ACTIONS = ("Retry", "Skip", "Compensate")
COMPENSATION_FAILED_ACTIONS = ("Retry", "Resolve")
_PLURAL = {k.kind: k.plural for k in (*KINDS, *SCHEDULE_KINDS, *TEMPLATES)}


def esc(value: object) -> str:
    """Text a user may have written, safe inside HTML text and quoted attributes."""
    return html.escape(shown("" if value is None else str(value)), quote=True)


def _q(**params: str | None) -> str:
    """A query string for an href (escaped for the attribute). `ns` is always kept: empty means every namespace,
    absent would mean the console's default namespace."""
    kept = {k: v for k, v in params.items() if v or k == "ns"}
    kept["ns"] = kept.get("ns") or ""
    return html.escape(urlencode(kept))


def layout(
    title: str,
    body: str,
    *,
    who: Identity | None,
    live: str | None = None,
    csrf: str = "",
    canonical: str | None = None,
) -> str:
    """The page around `body`: landmarks (header, nav, main), one h1, the stylesheet and the script.

    `live`: the event stream of what the page shows; `canonical`: the page's own address, which the script puts
    in the address bar after a form was posted (so reloading or a live update reads the page, not the POST)."""
    live_attr = f' data-live="{esc(live)}"' if live else ""
    if canonical:
        live_attr += f' data-canonical="{esc(canonical)}"'

    user = f'<p class="who">Signed in as <strong>{esc(who.user)}</strong></p>' if who else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{esc(csrf)}">
<title>{esc(title)} · Steadfast</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body{live_attr}>
<a class="skip" href="#main">Skip to content</a>
<header>
<p class="brand">Steadfast</p>
<nav aria-label="Main">
<ul>
<li><a href="/">Overview</a></li>
<li><a href="/approvals">Approvals</a></li>
<li><a href="/list?kind=tasksagas">Sagas</a></li>
<li><a href="/list?kind=healthmonitors">Monitors</a></li>
<li><a href="/list?kind=sagaschedules">Schedules</a></li>
<li><a href="/list?kind=sagatemplates">Templates</a></li>
</ul>
</nav>
{user}
</header>
<main id="main" tabindex="-1">
<h1>{esc(title)}</h1>
<div id="live-region" role="status" aria-live="polite"></div>
{body}
</main>
</body>
</html>
"""


def _warnings(warnings: Iterable[str]) -> str:
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f'<ul class="warnings" aria-label="Warnings">{items}</ul>' if items else ""


def _link(kind: str, namespace: str | None, name: str) -> str:
    """A link to an object's page: /ns/NS/PLURAL/NAME, or /cluster/PLURAL/NAME for a cluster-scoped one."""
    plural = _PLURAL.get(kind, kind)
    where = f"/ns/{esc(namespace)}" if namespace else "/cluster"
    return f'<a href="{where}/{plural}/{esc(name)}">{esc(name)}</a>'


def _phase(phase: str | None) -> str:
    value = phase or "-"
    return f'<span class="phase phase-{esc(value.lower())}">{esc(value)}</span>'


def _namespace_form(namespace: str | None, action: str) -> str:
    return f"""<form class="filters" method="get" action="{action}" role="search">
<label for="ns">Namespace</label>
<input id="ns" name="ns" value="{esc(namespace or "")}" placeholder="all you may list">
<button type="submit">Show</button>
</form>"""


def overview(data: Overview, namespace: str | None) -> str:
    rows = []
    for kind, counts in data.counts.items():
        known = sorted(set(counts) | (PHASES[next(k for k in KINDS if k.kind == kind)]))
        cells = []
        for phase in known:
            n = counts.get(phase, 0)
            if n:
                query = _q(kind=_PLURAL[kind], phase=phase if phase != "-" else None, ns=namespace)
                cells.append(f'<li><a href="/list?{query}">{_phase(phase)} {n}</a></li>')
        total = sum(counts.values())
        query = _q(kind=_PLURAL[kind], ns=namespace)
        rows.append(
            f'<tr><th scope="row"><a href="/list?{query}">{esc(kind)}</a></th><td>{total}</td>'
            f'<td><ul class="counts">{"".join(cells) or "<li>none</li>"}</ul></td></tr>'
        )
    waiting = "".join(
        f"<tr><td>{esc(r.kind)}</td><td>{esc(r.namespace)}</td><td>{_link(r.kind, r.namespace, r.name)}</td>"
        f"<td>{_phase(r.phase)}</td><td>{esc(r.waiting_for or '')}</td><td>{esc(r.detail)}</td></tr>"
        for r in data.needs_person
    )
    more = f"<p>{data.more} more not shown: filter by namespace or phase.</p>" if data.more else ""
    return f"""{_namespace_form(namespace, "/")}
{_warnings(data.warnings)}
<section aria-labelledby="counts-h">
<h2 id="counts-h">Counts by kind and phase</h2>
<table><thead><tr><th scope="col">Kind</th><th scope="col">Total</th><th scope="col">By phase</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
</section>
<section aria-labelledby="needs-h">
<h2 id="needs-h">Needs a person ({len(data.needs_person) + data.more})</h2>
{_table(["Kind", "Namespace", "Name", "Phase", "Waiting for", "Detail"], waiting, "Nothing waits for a person.")}
{more}
</section>"""


def _table(header: list[str], rows: str, empty: str) -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def listing(kind: str, page: Page, *, namespace: str | None, phase: str | None, selector: str | None) -> str:
    rows = []
    for obj in page.items:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        spec = obj.get("spec") or {}
        what = (spec.get("task") or {}).get("title") or (spec.get("subject") or {}).get("title") or ""
        rows.append(
            f"<tr><td>{esc(meta.get('namespace'))}</td>"
            f"<td>{_link(obj.get('kind', ''), meta.get('namespace', ''), meta.get('name', ''))}</td>"
            f"<td>{_phase(status.get('phase'))}</td><td>{esc(what)}</td><td>{esc(meta.get('creationTimestamp'))}</td></tr>"
        )
    phases = sorted(PHASES[next(k for k in KINDS if k.plural == kind)])
    header = ["Namespace", "Name", "Phase", "Title", "Created"]
    return _list_page(kind, page, header, rows, namespace=namespace, selector=selector, phase=phase, phases=phases)


def _list_page(
    kind: str,
    page: Page,
    header: list[str],
    rows: list[str],
    *,
    namespace: str | None,
    selector: str | None,
    phase: str | None = None,
    phases: Iterable[str] = (),
    namespaced: bool = True,
) -> str:
    """A list page: the filters the API server applies (namespace, phase, labels), the rows, the next page."""
    options = "".join(f'<option value="{esc(p)}"{" selected" if p == phase else ""}>{esc(p)}</option>' for p in phases)
    by_phase = (
        f'<label for="phase">Phase</label>\n'
        f'<select id="phase" name="phase"><option value="">any</option>{options}</select>'
        if options
        else ""
    )
    where = (
        f'<label for="ns">Namespace</label>\n'
        f'<input id="ns" name="ns" value="{esc(namespace or "")}" placeholder="all you may list">'
        if namespaced
        else ""
    )
    nxt = (
        f'<p><a rel="next" href="/list?{_q(kind=kind, ns=namespace, phase=phase, selector=selector, cont=page.next)}">'
        f"Next page{f' ({page.remaining} more)' if page.remaining else ''}</a></p>"
        if page.next
        else ""
    )
    return f"""<form class="filters" method="get" action="/list" role="search">
<input type="hidden" name="kind" value="{esc(kind)}">
{where}
{by_phase}
<label for="selector">Labels</label>
<input id="selector" name="selector" value="{esc(selector or "")}" placeholder="team=payments">
<button type="submit">Filter</button>
</form>
{_table(header, "".join(rows), "Nothing matches (or you may not see it).")}
{nxt}"""


def _ready(status: dict[str, Any]) -> str:
    """A resource without phases (a SagaSchedule) by its kstatus Ready condition: Ready, or its reason."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return _phase(None)
    return _phase("Ready" if ready.get("status") == "True" else ready.get("reason") or "NotReady")


def _cron(spec: dict[str, Any]) -> str:
    zone = spec.get("timeZone")
    return f"{spec.get('schedule', '')}{f' ({zone})' if zone else ''}"


def schedules(page: Page, *, namespace: str | None, selector: str | None) -> str:
    """The SagaSchedules list: when each runs, whether it is suspended, its runs active, its last and next times."""
    rows = []
    for obj in page.items:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        rows.append(
            f"<tr><td>{esc(meta.get('namespace'))}</td>"
            f"<td>{_link('SagaSchedule', meta.get('namespace', ''), meta.get('name', ''))}</td>"
            f"<td><code>{esc(_cron(spec))}</code></td><td>{'yes' if spec.get('suspend') else 'no'}</td>"
            f"<td>{esc(status.get('activeCount', 0))}</td><td>{esc(status.get('lastScheduleTime') or '-')}</td>"
            f"<td>{esc(status.get('nextScheduleTime') or '-')}</td><td>{_ready(status)}</td></tr>"
        )
    header = ["Namespace", "Name", "Schedule", "Suspended", "Active", "Last run", "Next run", "Ready"]
    return _list_page("sagaschedules", page, header, rows, namespace=namespace, selector=selector)


def schedule(obj: dict[str, Any], runs: list[dict[str, Any]], events: list[dict[str, Any]], kept: int = 0) -> str:
    """A SagaSchedule: its timing and counters, what each run is (inline steps or a template), its runs (the
    newest; `kept`: how many exist)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    run_spec = (spec.get("sagaTemplate") or {}).get("spec") or {}
    template, steps = run_spec.get("template") or {}, run_spec.get("steps") or []
    what = (
        f"template {esc(template.get('kind', 'SagaTemplate'))} {esc(template.get('name'))}"
        if template
        else f"{len(steps)} inline step{'' if len(steps) == 1 else 's'}"
    )
    rows = "".join(
        f"<tr><td>{_link('TaskSaga', r['metadata'].get('namespace', ''), r['metadata'].get('name', ''))}</td>"
        f"<td>{_phase((r.get('status') or {}).get('phase'))}</td><td>{esc(r['metadata'].get('creationTimestamp'))}</td>"
        "</tr>"
        for r in runs
    )
    problem = status.get("lastProblem")
    count = f"{kept}, the newest {len(runs)} shown" if kept > len(runs) else str(len(runs))
    return f"""<dl class="facts">
<dt>Namespace</dt><dd>{esc(meta.get("namespace"))}</dd>
<dt>Schedule</dt><dd><code>{esc(_cron(spec))}</code></dd>
<dt>State</dt><dd id="schedule-state">{_ready(status)}{" (suspended)" if spec.get("suspend") else ""}</dd>
<dt>Each run</dt><dd>{what}</dd>
<dt>Concurrency</dt><dd>{esc(spec.get("concurrencyPolicy", "Allow"))}</dd>
<dt>Starting deadline</dt><dd>{esc(spec.get("startingDeadline") or "-")}</dd>
<dt>Last run</dt><dd>{esc(status.get("lastScheduleTime") or "-")}</dd>
<dt>Last success</dt><dd>{esc(status.get("lastSuccessfulTime") or "-")}</dd>
<dt>Next run</dt><dd>{esc(status.get("nextScheduleTime") or "-")}</dd>
<dt>Active runs</dt><dd>{esc(status.get("activeCount", 0))} (as the schedule last looked; up to 30 s behind)</dd>
<dt>Runs</dt><dd>{esc(status.get("runsCreated", 0))} created, {esc(status.get("missedRuns", 0))} missed,
{esc(status.get("skippedRuns", 0))} skipped (an earlier run still active)</dd>
<dt>Last problem</dt><dd>{esc(problem or "-")}</dd>
<dt>Created by</dt><dd>{esc((meta.get("annotations") or {}).get(REQUESTED_BY, "?"))}</dd>
</dl>
<section aria-labelledby="runs-h"><h2 id="runs-h">Runs kept ({count})</h2>
{_table(["Saga", "Phase", "Created"], rows, "No run kept (or you may not list TaskSagas).")}
</section>
{_events(events)}"""


def templates(plural: str, page: Page, *, namespace: str | None, selector: str | None) -> str:
    """SagaTemplates (per namespace) or ClusterSagaTemplates: each with its parameters and description."""
    cluster = plural == "clustersagatemplates"
    rows = []
    for obj in page.items:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        names = ", ".join(str(p.get("name")) for p in spec.get("parameters") or []) or "-"
        rows.append(
            f"<tr><td>{esc(meta.get('namespace') or 'every namespace')}</td>"
            f"<td>{_link(obj.get('kind', ''), meta.get('namespace'), meta.get('name', ''))}</td>"
            f"<td>{esc(names)}</td><td>{esc(spec.get('description') or '')}</td></tr>"
        )
    other = "sagatemplates" if cluster else "clustersagatemplates"
    switch = (
        f'<p><a href="/list?{_q(kind=other, ns=namespace)}">'
        f"{'Templates of a namespace' if cluster else 'Templates the platform team offers every namespace'}</a></p>"
    )
    header = ["Namespace", "Name", "Parameters", "Description"]
    listed = _list_page(plural, page, header, rows, namespace=namespace, selector=selector, namespaced=not cluster)
    return f"{switch}\n{listed}"


def template(obj: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """A template: what a saga made from it does, its typed parameters, and how a TaskSaga names it."""
    meta, raw = obj["metadata"], obj.get("spec") or {}
    try:
        spec: SagaTemplateSpec | None = SagaTemplateSpec.model_validate(raw)
    except ValueError:
        spec = None  # stored under an older model: show what is there, without the schema
    params = (
        "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in parameter_rows(spec))
        if spec
        else ""
    )
    steps = "".join(
        f"<li>{esc(st.get('name'))}{' · after ' + esc(', '.join(st['dependsOn'])) if st.get('dependsOn') else ''}"
        f"{' · compensated' if st.get('compensation') else ''}</li>"
        for st in raw.get("steps") or []
    )
    values = {p.name: f"<{p.type.value}>" for p in (spec.parameters if spec else []) if p.is_required}
    usage = {
        "apiVersion": f"{obj.get('apiVersion', 'steadfast.dev/v1alpha1')}",
        "kind": "TaskSaga",
        "metadata": {"name": "my-run", **({"namespace": meta["namespace"]} if meta.get("namespace") else {})},
        "spec": {
            "task": {"id": "my-task-1"},
            "template": {"kind": obj.get("kind"), "name": meta.get("name")},
            "parameters": values,
        },
    }
    header = [h.capitalize() for h in HEADERS]
    return f"""<dl class="facts">
<dt>Offered to</dt><dd>{esc(meta.get("namespace") or "every namespace")}</dd>
<dt>Description</dt><dd>{esc(raw.get("description") or "-")}</dd>
<dt>Generation</dt><dd>{esc(meta.get("generation"))} (a run keeps the generation it started from)</dd>
<dt>Approval</dt><dd>{"required" if (raw.get("approval") or {}).get("required") else "none of its own"}</dd>
<dt>On failure</dt><dd>{esc((raw.get("onFailure") or {}).get("action") or "Compensate")}</dd>
</dl>
<section aria-labelledby="params-h"><h2 id="params-h">Parameters</h2>
{_table(header, params, "No parameters.")}
</section>
<section aria-labelledby="steps-h"><h2 id="steps-h">Steps</h2>
<ol>{steps or "<li>none</li>"}</ol>
</section>
<section aria-labelledby="use-h"><h2 id="use-h">Use it</h2>
<pre>{chr(10).join(esc(line) for line in yaml.safe_dump(usage, sort_keys=False).splitlines())}</pre>
</section>
{_events(events)}"""


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def _approvers(spec: dict[str, Any]) -> str:
    a = spec.get("approvers") or {}
    people = [*a.get("users", []), *(f"group {g}" for g in a.get("groups", []))]
    return f"{', '.join(people)} (required: {a.get('required', 1)})"


def _subject(spec: dict[str, Any]) -> str:
    subject = spec.get("subject") or {}
    rows = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v if isinstance(v, str) else json.dumps(v))}</dd>"
        for k, v in subject.items()
        if k != "title"
    )
    return f"<dl>{rows}</dl>" if rows else ""


def decision_form(namespace: str, name: str, csrf: str) -> str:
    ident = esc(f"{namespace}-{name}")
    return f"""<form class="decide" method="post" action="/ns/{esc(namespace)}/approvalrequests/{esc(name)}/decide">
{_csrf(csrf)}
<label for="reason-{ident}">Reason (required to reject)</label>
<input id="reason-{ident}" name="reason" maxlength="1024">
<button type="submit" name="verdict" value="approve">Approve</button>
<button type="submit" name="verdict" value="reject" class="reject">Reject</button>
</form>"""


def inbox(objects: list[dict[str, Any]], warnings: list[str], csrf: str, namespace: str | None) -> str:
    cards = []
    for obj in objects:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        requester = (meta.get("annotations") or {}).get(REQUESTED_BY, "?")
        approvals = "".join(
            f"<li>{esc(a.get('user'))} {'approved' if a.get('approved') else 'rejected'}: {esc(a.get('reason'))}</li>"
            for a in status.get("approvals") or []
        )
        cards.append(
            f"""<article class="card" aria-labelledby="t-{esc(ns)}-{esc(name)}">
<h2 id="t-{esc(ns)}-{esc(name)}">{esc((spec.get("subject") or {}).get("title"))}</h2>
<p>{_link("ApprovalRequest", ns, name)} in {esc(ns)} · requested by {esc(requester)}
· expires {esc(status.get("expiresAt"))}</p>
<p>Approvers: {esc(_approvers(spec))}</p>
{_subject(spec)}
{f"<ul>{approvals}</ul>" if approvals else ""}
{decision_form(ns, name, csrf)}
</article>"""
        )
    return f"""{_namespace_form(namespace, "/approvals")}
{_warnings(warnings)}
{"".join(cards) or '<p class="empty">No request waits for your decision.</p>'}"""


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _duration(start: str | None, end: str | None) -> str:
    a, b = _when(start), _when(end)
    if a is None:
        return "-"
    seconds = ((b or datetime.now(UTC)) - a).total_seconds()
    text = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return text if b else f"{text} so far"


def _events(events: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{esc(e.get('lastTimestamp') or e.get('eventTime'))}</td><td>{esc(e.get('type'))}</td>"
        f"<td>{esc(e.get('reason'))}</td><td>{esc(e.get('message'))}</td><td>{esc(e.get('count'))}</td></tr>"
        for e in events
    )
    return f"""<section aria-labelledby="events-h"><h2 id="events-h">Events</h2>
{_table(["Last seen", "Type", "Reason", "Message", "Count"], rows, "No Events (or you may not list them).")}
</section>"""


def _timeline_row(kind: str, record: dict[str, Any], label: str) -> str:
    outputs = record.get("outputs")
    shown_outputs = f"<pre>{esc(json.dumps(outputs, indent=1, sort_keys=True))}</pre>" if outputs else ""
    message = f'<p class="message">{esc(record["message"])}</p>' if record.get("message") else ""
    took = _duration(record.get("startedAt"), record.get("finishedAt"))
    after = record.get("dependsOn")  # a step of a graph saga: what it waited for
    waits = f" · after {esc(', '.join(after))}" if after else ""
    return (
        f'<li class="event {kind}"><h3>{esc(label)}</h3>'
        f"<p>{_phase(record.get('phase'))} · attempts {esc(record.get('attempts', 0))} · "
        f"started {esc(record.get('startedAt') or '-')} · took {esc(took)}{waits}</p>{message}{shown_outputs}</li>"
    )


def repair_forms(
    namespace: str, name: str, phase: str | None, status: dict[str, Any], csrf: str, *, plural: str = "tasksagas"
) -> str:
    """The repair actions the phase allows (the webhook has the last word): a saga's, or Retry of a request."""
    if phase == "ActionFailed":
        actions: tuple[str, ...] = ("Retry",)
    elif phase == "Paused":
        actions = PAUSED_ACTIONS
    elif phase == "CompensationFailed":
        actions = COMPENSATION_FAILED_ACTIONS
    else:
        return ""
    buttons = "".join(f'<button type="submit" name="action" value="{a}">{a}</button>' for a in actions)
    failed = [c.get("step") for c in status.get("compensations") or [] if c.get("phase") == "Failed"]
    choice = ""
    if phase == "CompensationFailed" and failed:  # Resolve names the step whose compensation was undone by hand
        options = "".join(f'<option value="{esc(step)}">{esc(step)}</option>' for step in failed)
        choice = (
            '<label for="repair-step">Step undone by hand (to resolve)</label>\n'
            f'<select id="repair-step" name="step">{options}</select>'
        )
    return f"""<section aria-labelledby="repair-h"><h2 id="repair-h">Repair</h2>
<form class="repair" method="post" action="/ns/{esc(namespace)}/{plural}/{esc(name)}/repair">
{_csrf(csrf)}
{choice}
<label for="repair-reason">Reason (required to skip or resolve)</label>
<input id="repair-reason" name="reason" maxlength="1024">
{buttons}
</form></section>"""


def saga(obj: dict[str, Any], events: list[dict[str, Any]], csrf: str, notice: str = "") -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    phase = status.get("phase")
    steps = [_timeline_row("step", s, f"Step {s.get('name')}") for s in status.get("steps") or []]
    comps = [
        _timeline_row("compensation", c, f"Compensation of {c.get('step')}") for c in status.get("compensations") or []
    ]
    result = status.get("result") or {}
    task = spec.get("task") or {}
    pinned = status.get("template") or {}  # the template a templated run started from, as it was then
    home = meta.get("namespace") if pinned.get("kind") == "SagaTemplate" else None
    template = (
        f"<dt>Template</dt><dd>{esc(pinned.get('kind'))} {_link(pinned.get('kind', ''), home, pinned.get('name', ''))} "
        f"(generation {esc(pinned.get('generation'))}; the run keeps that definition)</dd>"
        if pinned
        else ""
    )
    return f"""{notice}
<dl class="facts">
<dt>Namespace</dt><dd>{esc(meta.get("namespace"))}</dd>
<dt>Task</dt><dd>{esc(task.get("id"))}{": " + esc(task["title"]) if task.get("title") else ""}</dd>
<dt>Phase</dt><dd id="saga-phase">{_phase(phase)}</dd>
<dt>Current step</dt><dd>{esc(status.get("currentStep") or "-")}</dd>
<dt>Progress</dt><dd>{esc(status.get("progress") or "-")}</dd>
{template}<dt>Result</dt><dd>{esc(result.get("status") or "-")} {esc(result.get("error") or "")}</dd>
<dt>Created</dt><dd>{esc(meta.get("creationTimestamp"))}</dd>
</dl>
{repair_forms(meta["namespace"], meta["name"], phase, status, csrf)}
<section aria-labelledby="timeline-h"><h2 id="timeline-h">Timeline</h2>
<ol class="timeline">{"".join(steps + comps) or "<li>No step has started.</li>"}</ol>
</section>
{_events(events)}"""


def monitor(obj: dict[str, Any], events: list[dict[str, Any]]) -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    target = (spec.get("target") or {}).get("http") or {}
    checks = int(status.get("checkCount") or 0)
    transitions = [e for e in events if e.get("reason") in ("Healthy", "Unhealthy", "Recovered", "Failing")]
    up = uptime(status, transitions, datetime.now(UTC))
    return f"""<dl class="facts">
<dt>Namespace</dt><dd>{esc(meta.get("namespace"))}</dd>
<dt>Target</dt><dd>{esc(target.get("method", ""))} {esc(target.get("url", ""))}</dd>
<dt>State</dt><dd id="monitor-phase">{_phase(status.get("phase"))}</dd>
<dt>Since</dt><dd>{esc(status.get("lastTransitionTime") or "-")}</dd>
<dt>Checks</dt><dd>{checks} made; {esc(status.get("consecutiveFailures", 0))} failed in a row,
{esc(status.get("consecutiveSuccesses", 0))} succeeded in a row</dd>
<dt>Last check</dt><dd>{esc(status.get("lastCheckTime") or "-")} (next {esc(status.get("nextCheckTime") or "-")})</dd>
<dt>Last error</dt><dd>{esc(status.get("lastError") or status.get("failedCondition") or "-")}</dd>
<dt>Uptime</dt><dd>{esc(up)}</dd>
<dt>Alerts sent</dt><dd>{esc(status.get("alertsSent", 0))}</dd>
</dl>
{_events(events)}"""


def uptime(status: dict[str, Any], transitions: list[dict[str, Any]], now: datetime) -> str:
    """The share of time healthy over what is known: the current state since lastTransitionTime, and before it
    the periods between the transition Events the API server still keeps."""
    since = _when(status.get("lastTransitionTime"))
    if since is None or status.get("healthy") is None:
        return "unknown (no verdict yet)"
    marks = sorted(
        (t, e.get("reason") in ("Healthy", "Recovered"))
        for e in transitions
        if (t := _when(e.get("lastTimestamp") or e.get("eventTime"))) is not None and t < since
    )
    marks.append((since, bool(status.get("healthy"))))
    start = marks[0][0]
    healthy = 0.0
    for (t, ok), (nxt, _) in zip(marks, [*marks[1:], (now, False)], strict=True):
        if ok:
            healthy += (nxt - t).total_seconds()
    total = (now - start).total_seconds()
    if total <= 0:
        return "unknown"
    return f"{100 * healthy / total:.1f}% since {start.isoformat(timespec='seconds')}"


def approval(obj: dict[str, Any], csrf: str, events: list[dict[str, Any]], notice: str = "") -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    phase = status.get("phase")
    form = decision_form(meta["namespace"], meta["name"], csrf) if phase in (None, "Pending") else ""
    if phase == "ActionFailed":  # approved, but the action failed: `steadfast retry --kind apr`
        form = repair_forms(meta["namespace"], meta["name"], phase, status, csrf, plural="approvalrequests")
    approvals = "".join(
        f"<li>{esc(a.get('user'))} {'approved' if a.get('approved') else 'rejected'} at {esc(a.get('at'))}: "
        f"{esc(a.get('reason'))}</li>"
        for a in status.get("approvals") or []
    )
    return f"""{notice}
<dl class="facts">
<dt>Title</dt><dd>{esc((spec.get("subject") or {}).get("title"))}</dd>
<dt>Requested by</dt><dd>{esc(annotations.get(REQUESTED_BY, "?"))}</dd>
<dt>Approvers</dt><dd>{esc(_approvers(spec))}</dd>
<dt>Phase</dt><dd id="approval-phase">{_phase(status.get("phase"))}</dd>
<dt>Decided by</dt><dd id="decided-by">{esc(annotations.get(DECIDED_BY) or "-")}</dd>
<dt>Reason</dt><dd>{esc(status.get("reason") or "-")}</dd>
</dl>
{_subject(spec)}
{f"<ul>{approvals}</ul>" if approvals else ""}
{form}
{_events(events)}"""


def notice(done: bool, message: str) -> str:
    """The outcome of a decision; a refusal in the API server's (the webhook's) own words."""
    cls, role = ("ok", "status") if done else ("refused", "alert")
    prefix = "Done" if done else "Refused"
    return f'<p class="notice {cls}" role="{role}">{prefix}: {esc(message)}</p>'


def error(message: str) -> str:
    return f'<p class="notice refused" role="alert">{esc(message)}</p>'
