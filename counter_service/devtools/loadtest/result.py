"""The result of a run as one JSON-ready dict, including its verdict and exit status."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from counter_service.devtools.loadtest import accounting, propagation, stats
from counter_service.devtools.loadtest.acks import Ack, acknowledge
from counter_service.devtools.loadtest.history import History
from counter_service.devtools.loadtest.monitors import phase_lag
from counter_service.devtools.loadtest.recorder import NUMBERS, ONLINE
from counter_service.devtools.loadtest.runner import RunRecord
from counter_service.devtools.loadtest.sessions import Slot

SCHEMA = 1
CLIENT_LAG_WARN_MS = 100.0
Json = dict[str, Any]

ACK_DEFINITION = (
    "the k-th click sent in the run (all clickers, from 1) is acknowledged when its own"
    " session first shows clicks >= baseline + k (exactly its result if clicks are applied"
    " in send order), within --ack-timeout of being sent"
)
PROPAGATION_DEFINITION = (
    "per acknowledged click and other session: time from the acknowledgement until that"
    " session first showed a clicks value >= the acknowledged value (earlier: counted as 0"
    " and in seen_before_ack)"
)
REPLICAS_DEFINITION = (
    "sessions that rendered, counted by the replica their page names in its `replica` Text"
    " (the worker id of that server process's GET /healthz); behind a sticky load balancer,"
    " how new browsers spread over the replicas"
)
CONVERGENCE_DEFINITION = (
    "a session has converged when it shows the expected clicks, views and online totals;"
    " its time is when the last of those values appeared, in seconds after the last click"
    " was sent (0 if it already showed them)"
)


def build(record: RunRecord) -> Json:
    """Analyse a finished run into the JSON result."""
    histories = {s.index: History.of(s) for s in record.slots if s.recorder.rendered()}
    acks, unacknowledged = acknowledge(record.tally.clicks, histories, record.options.ack_timeout)
    result: Json = {
        "schema": SCHEMA,
        "tool": "counter-service loadtest",
        "finished_at_unix": round(time.time(), 3),
        "options": _options(record),
        "targets": _targets(record),
        "fleet": record.targets.fleet or None,
        "sessions": _sessions(record),
        "replicas": _replicas(record),
        "clicks": _clicks(record, acks, unacknowledged),
        **_propagation(record, acks, list(histories.values())),
        "totals": _totals(record),
        "convergence": _convergence(record),
        "redis": _redis(record),
        "servers": _servers(record),
        "client": _client(record),
    }
    result["online_after_close"] = _after_close(record)
    problems = verdict(result, record.aborted)
    result.update(ok=not problems, problems=problems, exit_status=1 if problems else 0)
    result["warnings"] = warnings(result)
    return result


def _options(record: RunRecord) -> Json:
    options = {k: v for k, v in asdict(record.options).items() if k != "redis_url"}
    options.update(out=_path(record.options.out), plot=_path(record.options.plot))
    options["targets"] = list(record.options.targets)
    options["metrics_urls"] = list(record.options.metrics_urls)
    return options


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def redact(url: str | None) -> str | None:
    """A URL without its password."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _targets(record: RunRecord) -> Json:
    listed = [{"url": t.url, "process": t.process} for t in record.targets.targets]
    return {"urls": listed, "process_split": "known" if record.targets.split_known else "unknown"}


def _sessions(record: RunRecord) -> Json:
    slots = record.slots
    failures = Counter(slot.failure for slot in slots if slot.failure is not None)
    return {
        "requested": len(slots),
        "opened": sum(1 for slot in slots if slot.registered),
        "connected": sum(1 for slot in slots if slot.recorder.rendered()),
        "failed": sum(failures.values()),
        "live_at_end": len(record.kept()),
        "failures": dict(failures.most_common()),
        "page_errors": dict(_page_errors(record).most_common()),
    }


def _replicas(record: RunRecord) -> Json:
    rendered = _rendered(record)
    spread = Counter(slot.replica for slot in rendered if slot.replica is not None)
    return {
        "count": len(spread),
        "sessions": dict(sorted(spread.items())),
        "unknown": len(rendered) - spread.total(),
        "definition": REPLICAS_DEFINITION,
    }


def _rendered(record: RunRecord) -> list[Slot]:
    return [slot for slot in record.slots if slot.recorder.rendered()]


def _split_known(record: RunRecord) -> bool:
    """Which process each session is on: known from the targets, or from every page."""
    rendered = _rendered(record)
    by_page = bool(rendered) and all(slot.replica is not None for slot in rendered)
    return record.targets.split_known or by_page


def _clicks(record: RunRecord, acks: list[Ack], unacknowledged: Counter[str]) -> Json:
    tally = record.tally
    errors = tally.errors + unacknowledged
    return {
        "planned": tally.planned,
        "sent": tally.sent,
        "acknowledged": len(acks),
        "errored": sum(errors.values()),
        "errors": dict(errors.most_common()),
        "ack_latency": stats.summarize(a.acked_at - a.sent_at for a in acks).as_dict(),
        "acknowledgement": ACK_DEFINITION,
    }


def _page_errors(record: RunRecord) -> Counter[str]:
    """Error messages pages show at the end (an increment was not counted), by message."""
    return Counter(
        "page status: " + s.recorder.status[:80] for s in record.slots if s.recorder.status
    )


def _propagation(record: RunRecord, acks: list[Ack], histories: list[History]) -> Json:
    started, split = record.tally.started_at, _split_known(record)
    measured = propagation.measure(acks, histories, started, split)
    groups = (propagation.SAME, propagation.OTHER) if split else (propagation.UNKNOWN,)
    summary = {g: stats.summarize(measured.groups.get(g, [])).as_dict() for g in groups}
    everything = [x for samples in measured.groups.values() for x in samples]
    return {
        "propagation": {
            **summary,
            "all": stats.summarize(everything).as_dict(),
            "split": "by process" if split else "unknown (single target, pages name no replica)",
            "acks_measured": measured.acks_used,
            "seen_before_ack": measured.seen_before_ack,
            "never_seen": measured.never_seen,
            "definition": PROPAGATION_DEFINITION,
        },
        "timeline": [
            {"second": b.second, **b.stats.as_dict()} for b in stats.per_second(measured.seconds)
        ],
    }


def _totals(record: RunRecord) -> Json:
    expected = record.expected()
    live = record.kept()
    checks: Json = {"baseline_from": record.baseline_from}
    for name in NUMBERS:
        shown = [slot.recorder.values.get(name) for slot in live]
        store = None if record.store_final is None else record.store_final[name]
        start = record.baseline.get(name, 0)
        checks[name] = accounting.check_counter(name, start, expected[name], shown, store).as_dict()
    return checks


def _convergence(record: RunRecord) -> Json:
    times = list(record.converged_at.values())
    summary = accounting.convergence(times, record.options.converge_timeout).as_dict()
    curve = [[round(t, 4), round(f, 4)] for t, f in accounting.curve(times)]
    return {**summary, "curve": curve, "definition": CONVERGENCE_DEFINITION}


def _redis(record: RunRecord) -> Json:
    sampler = record.monitors.redis
    if sampler is None:
        return {"url": None, "status": "unknown: no --redis-url given"}
    return {
        "url": redact(sampler.url),
        "status": "sampled" if sampler.samples else "no sample (CLIENT LIST failed)",
        "connections_max": sampler.max_total,
        "pubsub_connections_max": sampler.max_pubsub,
        "connections_last": sampler.last_total,
        "samples": sampler.samples,
        "errors": sampler.errors,
    }


def _servers(record: RunRecord) -> list[Json]:
    return [
        {
            "url": s.url,
            "event_loop_lag": s.status,
            "event_loop_lag_p99_ms_max": max(s.p99_ms, default=None),
            "event_loop_lag_max_ms": max(s.max_ms, default=None),
            "event_loop_lag_while_clicking": phase_lag(
                s.histograms, record.tally.started_at, record.last_click_at
            ),
            "samples": len(s.max_ms),
            "polls_failed": s.missed,
        }
        for s in record.monitors.servers
    ]


def _client(record: RunRecord) -> Json:
    return {
        "event_loop_lag_max_ms": round(record.monitors.loop.max_ms, 3),
        "run_seconds": round(record.finished_at - record.started_at, 3),
    }


def _after_close(record: RunRecord) -> Json | None:
    if record.online_after_close is None:
        return None
    online, waited = record.online_after_close
    expected = record.baseline.get(ONLINE, 0)
    return {"expected": expected, "observed": online, "waited_s": round(waited, 3)}


def warnings(result: Json) -> list[str]:
    """What does not fail the run but deserves a look."""
    notes = []
    after = result["online_after_close"]
    if after is not None and after["observed"] != after["expected"]:
        notes.append(
            f"online still {after['observed']} (not {after['expected']}) {after['waited_s']}s"
            " after every session closed"
        )
    lag = result["client"]["event_loop_lag_max_ms"]
    if lag > CLIENT_LAG_WARN_MS:
        notes.append(f"this client's event loop lagged up to {lag:.0f} ms: latencies include it")
    return notes


def verdict(result: Json, aborted: str | None) -> list[str]:
    """Everything that makes the run fail (an empty list: it passed)."""
    problems = [aborted] if aborted else []
    sessions, clicks, convergence = result["sessions"], result["clicks"], result["convergence"]
    if sessions["failed"]:
        problems.append(f"{sessions['failed']} of {sessions['requested']} sessions failed")
    if clicks["errored"]:
        problems.append(f"{clicks['errored']} clicks errored")
    if not clicks["sent"]:
        problems.append("no click was sent")
    problems += _count_problems(result["totals"])
    if not convergence["all_converged"]:
        missing = convergence["sessions"] - convergence["converged"]
        problems.append(f"{missing} sessions did not converge within {convergence['timeout_s']}s")
    return problems


def _count_problems(totals: Json) -> list[str]:
    problems = []
    for name in NUMBERS:
        check = totals[name]
        if check["lost"]:
            problems.append(f"{name}: {check['lost']} lost (expected {check['expected']})")
        if check["extra"]:
            problems.append(f"{name}: {check['extra']} extra (expected {check['expected']})")
    return problems
