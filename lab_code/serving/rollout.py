"""A candidate model beside the current one, the way a release meets real traffic.

The registry says which model is which: the alias `production` names the model that answers, the
alias `candidate` the one on trial, and the plan beside them (rollout.json) how the candidate
meets traffic:

- **shadow**: every request is answered by production; the candidate reads a copy, and the two
  answers are compared and counted, never returned;
- **canary**: a share of requests (say 10%) is answered by the candidate; production reads a copy
  of those, so disagreement is measured in this mode too.

`Rollout` is what the service runs instead of one `ModelWorker` (it answers the same `submit`,
`version`, `stuck_for`, `close`), and every answer's future carries the `model_version` that
produced it. A thread follows the registry: when an alias moves, the service loads what it now
names beside the model that keeps answering, switches over, and retires the old model once its
last request is answered, so a promotion or a rollback drops no request and needs no restart.
The same thread judges the candidate (`judge`, by `RolloutRules`: errors, latency, confidence,
disagreement) and, when the plan says `auto`, moves the aliases itself: back on a breach, forward
after enough clean answers. Several worker processes each judge what they see; the registry's
lock lets only the first move count.
"""

from __future__ import annotations

import collections
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab_code import registry
from lab_code.artifacts import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    RegistryError,
    model_folder,
    read_aliases,
)
from lab_code.serving.logs import log_request
from lab_code.serving.model_source import ServedModel, from_registry
from lab_code.serving.worker import ModelWorker

PRODUCTION, CANDIDATE = "production", "candidate"  # the registry aliases a rollout moves
PLAN_FILE = "rollout.json"  # beside aliases.json: how the candidate meets traffic
EVENTS_FILE = "rollout_events.jsonl"  # one JSON line per move: what, when, why
MODES = ("shadow", "canary")
WINDOW = 2000  # answers per model the statistics are made of (the most recent)


@dataclass(frozen=True)
class RolloutRules:
    """When a candidate is rolled back (any limit breached) or promoted (none breached after
    `promote_after` answers; 0: never by itself). Ratios and drops compare the candidate with
    production over the same stretch of traffic."""

    max_error_rate: float = 0.02  # failed calls (an exception, a missed deadline) per call
    max_latency_ratio: float = 2.0  # candidate's p95 model time / production's
    max_confidence_drop: float = 0.05  # production's mean line confidence - the candidate's
    max_disagreement: float = 0.10  # share of compared requests whose texts differ
    min_samples: int = 50  # candidate calls (and comparisons) before any verdict
    promote_after: int = 300  # clean candidate answers before it is promoted (0: never)


@dataclass(frozen=True)
class Plan:
    """How the candidate meets traffic, as rollout.json holds it."""

    mode: str = "shadow"
    share: float = 0.1  # canary only: the share of requests the candidate answers
    auto: bool = True  # the service moves the aliases itself by `rules`
    rules: RolloutRules = field(default_factory=RolloutRules)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Rollout mode must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"The canary share must be between 0 and 1, not {self.share}.")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        rules = RolloutRules(**data.get("rules", {}))
        return cls(mode=data.get("mode", "shadow"), share=float(data.get("share", 0.1)),
                   auto=bool(data.get("auto", True)), rules=rules)


def plan_path(registry_dir: str | os.PathLike, name: str) -> Path:
    return model_folder(registry_dir, name) / PLAN_FILE


def read_plan(registry_dir: str | os.PathLike, name: str) -> Plan | None:
    path = plan_path(registry_dir, name)
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        raise RegistryError(f"{path} is not a rollout plan ({err}): write it again with "
                            "`python -m lab_code.serving release start`.") from err


def write_plan(registry_dir: str | os.PathLike, name: str, plan: Plan | None) -> None:
    """Write (or, with None, remove) the plan in one step."""
    path = plan_path(registry_dir, name)
    if plan is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{PLAN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plan.to_json(), indent=2))
    os.replace(tmp, path)


def record_event(registry_dir: str | os.PathLike, name: str, **event: Any) -> dict[str, Any]:
    """Append one move to the registry's rollout_events.jsonl and log it; returns the event."""
    event = {"time": round(time.time(), 3), "pid": os.getpid(), **event}
    path = model_folder(registry_dir, name) / EVENTS_FILE
    with open(path, "a", encoding="utf-8") as fh:  # one short line: appends do not interleave
        fh.write(json.dumps(event) + "\n")
    log_request(event=f"rollout_{event.get('action', 'event')}",
                **{k: v for k, v in event.items() if k not in ("time", "pid", "action")})
    return event


def read_events(registry_dir: str | os.PathLike, name: str) -> list[dict[str, Any]]:
    path = model_folder(registry_dir, name) / EVENTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- what each model did --------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One model's record over its window: calls, failures, p95 time, mean confidence, and the
    comparisons it took part in."""

    calls: int = 0
    errors: int = 0
    p95_ms: float | None = None
    confidence: float | None = None
    compared: int = 0
    disagreed: int = 0
    # on the requests where the two disagreed: production's mean confidence minus the
    # candidate's (> 0: the candidate was less sure of its different reading); None if unknown
    disagreement_gap: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def disagreement(self) -> float:
        return self.disagreed / self.compared if self.compared else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_rate"] = round(self.error_rate, 4)
        out["disagreement"] = round(self.disagreement, 4)
        return out


class Record:
    """The recent calls of one model (thread-safe): time in ms (None: failed), mean confidence."""

    def __init__(self, window: int = WINDOW) -> None:
        self._calls: collections.deque = collections.deque(maxlen=window)
        self._compared: collections.deque = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.answered = 0  # answers returned to callers (not copies), since this model started

    def call(self, ms: float | None, confidence: float | None) -> None:
        with self._lock:
            self._calls.append((ms, confidence))

    def comparison(self, differ: bool, gap: float | None = None) -> None:
        with self._lock:
            self._compared.append((differ, gap))

    def snapshot(self) -> Snapshot:
        with self._lock:
            calls, compared = list(self._calls), list(self._compared)
        times = sorted(ms for ms, _ in calls if ms is not None)
        confidences = [c for ms, c in calls if ms is not None and c is not None]
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else None
        gaps = [gap for differ, gap in compared if differ and gap is not None]
        return Snapshot(calls=len(calls), errors=sum(ms is None for ms, _ in calls),
                        p95_ms=round(p95, 3) if p95 is not None else None,
                        confidence=round(statistics.fmean(confidences), 4) if confidences else None,
                        compared=len(compared), disagreed=sum(d for d, _ in compared),
                        disagreement_gap=round(statistics.fmean(gaps), 4) if gaps else None)


@dataclass(frozen=True)
class Verdict:
    action: str  # "wait", "rollback" or "promote"
    reasons: tuple[str, ...] = ()


def judge(production: Snapshot, candidate: Snapshot, rules: RolloutRules,
          mode: str = "canary") -> Verdict:
    """The rule: roll back when any limit is breached; in a canary, promote after
    `promote_after` clean calls (a shadow only watches: no user has seen the candidate yet);
    otherwise wait. Each reason is one sentence with the figures behind it."""
    if candidate.calls < rules.min_samples:
        return Verdict("wait", (f"{candidate.calls} of {rules.min_samples} candidate calls so "
                                "far",))
    reasons = []
    if candidate.error_rate > rules.max_error_rate:
        reasons.append(f"error rate {candidate.error_rate:.1%} > {rules.max_error_rate:.1%}")
    if candidate.p95_ms is not None and production.p95_ms:
        ratio = candidate.p95_ms / production.p95_ms
        if ratio > rules.max_latency_ratio:
            reasons.append(f"p95 {candidate.p95_ms:.0f} ms = {ratio:.1f}x production's "
                           f"{production.p95_ms:.0f} ms > {rules.max_latency_ratio:g}x")
    if candidate.confidence is not None and production.confidence is not None:
        drop = production.confidence - candidate.confidence
        if drop > rules.max_confidence_drop:
            reasons.append(f"mean confidence {candidate.confidence:.3f}, {drop:.3f} below "
                           f"production's {production.confidence:.3f} > "
                           f"{rules.max_confidence_drop:g}")
    # Disagreeing says that one of the two is wrong, not which: a better model disagrees with
    # production too. Where the model scores its lines, the candidate is held to it only when it
    # was the less sure of the two on the requests where they differed.
    gap = candidate.disagreement_gap
    if candidate.compared >= rules.min_samples and \
            candidate.disagreement > rules.max_disagreement and (gap is None or gap > 0):
        sure = f", and is less sure on those (by {gap:.3f})" if gap is not None else ""
        reasons.append(f"disagrees with production on {candidate.disagreement:.1%} of "
                       f"{candidate.compared} requests > {rules.max_disagreement:.0%}{sure}")
    if reasons:
        return Verdict("rollback", tuple(reasons))
    if mode == "canary" and rules.promote_after and \
            candidate.calls - candidate.errors >= rules.promote_after:
        return Verdict("promote", (f"{candidate.calls} calls within every limit",))
    return Verdict("wait", (f"{candidate.calls} calls within every limit so far",))


@dataclass(frozen=True)
class RegistrySource:
    """Where a service takes its models from: the registry folder, the model's name, the alias
    that names the model in production, and which of each version's files it runs (`runtime`:
    auto, onnx or torchscript; lab_code.registry.served_format)."""

    registry: str = str(DEFAULT_REGISTRY)
    name: str = DEFAULT_MODEL_NAME
    alias: str = PRODUCTION
    runtime: str = "auto"


def start(source: RegistrySource, load: Callable[[Path], ModelWorker]) -> Rollout:
    """A Rollout for `source`, its production model loaded by `load(path)` (a ModelWorker that
    is warm), following the registry from now on."""
    return Rollout(source.registry, lambda served: load(served.path), name=source.name,
                   production=source.alias, runtime=source.runtime).start()


def health_fields(worker: Any) -> dict[str, Any]:
    """What /health adds about the model: which one it is (name, registry version, sha256), and
    with a rollout, each model's record, the plan and the last move."""
    if isinstance(worker, Rollout):
        return {"model": worker.production.served.describe(), "rollout": worker.status()}
    served = getattr(getattr(worker, "recognizer", None), "served", None)
    return {"model": served.describe()} if isinstance(served, ServedModel) else {}


# --- the models and the router ------------------------------------------------------------------

class Arm:
    """One loaded model: its worker thread, what it served, its record and its requests in
    flight (a retired arm closes when the last one is answered)."""

    def __init__(self, served: ServedModel, worker: ModelWorker) -> None:
        self.served, self.worker = served, worker
        self.record = Record()
        self.retired = False
        self._inflight = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def version(self) -> str:
        return self.served.version

    @property
    def release(self) -> str | None:
        return self.served.release

    def enter(self) -> None:
        with self._lock:
            self._inflight += 1

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1
        self.close_if_idle()

    def retire(self) -> None:
        self.retired = True
        self.close_if_idle()

    def close_if_idle(self) -> None:
        with self._lock:
            if not self.retired or self._inflight > 0 or self._closed:
                return
            self._closed = True
        self.worker.close()

    def describe(self) -> dict[str, Any]:
        return {**self.served.describe(), "answered": self.record.answered,
                **self.record.snapshot().to_json()}


def _texts(result: Any) -> tuple[list[str], float | None]:
    """A worker's result as texts and mean confidence: (text, confidence) pairs, the confidence
    None where the worker does not score its lines (ModelWorker(scored=False)), or plain
    strings."""
    texts, scores = [], []
    for item in result:
        if isinstance(item, tuple):
            texts.append(item[0])
            if item[1] is not None:
                scores.append(float(item[1]))
        else:
            texts.append(item)
    return texts, (statistics.fmean(scores) if scores else None)


Loader = Callable[[ServedModel], ModelWorker]


class Rollout:
    """The service's models, following the registry: `submit` routes each request by the plan,
    a thread follows the aliases and judges the candidate. Use like a ModelWorker."""

    def __init__(self, registry_dir: str | os.PathLike, load: Loader,
                 name: str = DEFAULT_MODEL_NAME, production: str = PRODUCTION,
                 poll_s: float = 0.25, seed: int | None = None, runtime: str = "auto") -> None:
        self.registry_dir, self.name, self.production_alias = Path(registry_dir), name, production
        self.runtime = runtime  # which file of each version it loads (registry.served_format)
        self._load, self.poll_s = load, poll_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: dict[str, str] = {}  # release -> why it could not be loaded
        self.last_event: dict[str, Any] | None = None
        self.plan: Plan | None = None
        self.candidate: Arm | None = None
        self.production = self._arm(from_registry(name, alias=production,
                                                  registry_dir=registry_dir, runtime=runtime))

    # --- what the service calls (ModelWorker's interface) --------------------------------------
    @property
    def version(self) -> str:
        return self.production.version

    @property
    def recognizer(self):
        return self.production.worker.recognizer

    @property
    def scored(self) -> bool:
        """Whether answers carry each line's confidence (ModelWorker(scored=...), lesson 08)."""
        return bool(getattr(self.production.worker, "scored", False))

    def start(self) -> Rollout:
        """Follow the registry from now on (a daemon thread); returns self."""
        self._reconcile()
        self._thread = threading.Thread(target=self._follow, name="rollout", daemon=True)
        self._thread.start()
        return self

    def submit(self, lines, deadline: float, timings: dict[str, float] | None = None) -> Future:
        """Queue one request's forward pass on the model the plan picks; the future's
        `model_version` says which model that is. A copy goes to the other model when there is a
        candidate (shadow: always; canary: for the candidate's share), to be compared."""
        with self._lock:
            arm, copy, plan = self.production, None, self.plan
            candidate = self.candidate
            if candidate is not None and plan is not None:
                if plan.mode == "canary" and self._rng.random() < plan.share:
                    arm, copy = candidate, self.production
                elif plan.mode == "shadow":
                    copy = candidate
            arm.enter()
            if copy is not None:
                copy.enter()
        pair = _Pair(candidate, arm if copy is candidate else copy) if copy is not None else None
        job = self._run(arm, lines, deadline, timings, pair, answer=True)
        job.model_version = arm.version
        if copy is not None:
            self._run(copy, lines, deadline, None, pair, answer=False)
        return job

    def stuck_for(self) -> float:
        arms = [a for a in (self.production, self.candidate) if a is not None]
        return max(a.worker.stuck_for() for a in arms)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for arm in (self.production, self.candidate):
            if arm is not None:
                arm.retire()

    def status(self) -> dict[str, Any]:
        """For /health: each model's record, the plan, the candidate's verdict so far, and the
        last move (in this process)."""
        with self._lock:
            production, candidate, plan = self.production, self.candidate, self.plan
        out: dict[str, Any] = {"production": production.describe()}
        if candidate is not None and plan is not None:
            out["candidate"] = candidate.describe()
            out["plan"] = plan.to_json()
            verdict = judge(production.record.snapshot(), candidate.record.snapshot(),
                            plan.rules, plan.mode)
            out["verdict"] = {"action": verdict.action, "reasons": list(verdict.reasons)}
        if self._failed:
            out["failed_to_load"] = dict(self._failed)
        if self.last_event is not None:
            out["last_event"] = self.last_event
        return out

    # --- routing -------------------------------------------------------------------------------
    def _arm(self, served: ServedModel) -> Arm:
        return Arm(served, self._load(served))

    def _run(self, arm: Arm, lines, deadline: float, timings: dict[str, float] | None,
             pair: _Pair | None, answer: bool) -> Future:
        started = time.perf_counter()
        job = arm.worker.submit(lines, deadline, timings)

        def done(future: Future) -> None:
            try:
                texts, confidence = _texts(future.result())
                ms: float | None = (time.perf_counter() - started) * 1000
            except BaseException:  # failed, missed its deadline, or cancelled while queued
                texts, confidence, ms = None, None, None
            arm.record.call(ms, confidence)
            if answer and texts is not None:
                arm.record.answered += 1
            if pair is not None:
                pair.done(arm, texts, confidence)
            arm.leave()

        job.add_done_callback(done)
        return job

    # --- following the registry ----------------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._reconcile()
                self._judge()
            except Exception as err:  # a damaged registry must not stop the service
                log_request(event="rollout_error", error=f"{type(err).__name__}: {err}")

    def _load_release(self, release: str, alias: str) -> Arm | None:
        if release in self._failed:
            return None
        try:
            served = from_registry(self.name, version=release, registry_dir=self.registry_dir,
                                   runtime=self.runtime)
            arm = self._arm(replace(served, alias=alias))
        except (RegistryError, OSError, ValueError, RuntimeError) as err:
            self._failed[release] = f"{type(err).__name__}: {err}"
            log_request(event="rollout_load_failed", release=release, error=self._failed[release])
            return None
        log_request(event="rollout_loaded", alias=alias, release=release, model_version=arm.version)
        return arm

    def _reconcile(self) -> None:
        """Make the loaded models match the registry's aliases and plan."""
        aliases = read_aliases(self.registry_dir, self.name)
        plan = read_plan(self.registry_dir, self.name)
        wanted_prod = aliases.get(self.production_alias)
        wanted_cand = aliases.get(CANDIDATE)
        retire: list[Arm] = []
        if wanted_prod and wanted_prod != self.production.release:
            if self.candidate is not None and self.candidate.release == wanted_prod:
                new_prod = self.candidate  # promoted: it is loaded and warm already
            else:  # moved by hand (or rolled back to an older version): load it first
                new_prod = self._load_release(wanted_prod, self.production_alias)
            if new_prod is not None:
                new_prod.served = replace(new_prod.served, alias=self.production_alias)
                with self._lock:
                    retire.append(self.production)
                    if new_prod is self.candidate:
                        self.candidate = None
                    self.production = new_prod
        if wanted_cand == self.production.release:
            wanted_cand = None
        if self.candidate is not None and self.candidate.release != wanted_cand:
            with self._lock:  # rolled back or replaced: no new request goes to it
                retire.append(self.candidate)
                self.candidate = None
        if wanted_cand and self.candidate is None:
            arm = self._load_release(wanted_cand, CANDIDATE)
            if arm is not None:
                with self._lock:
                    self.candidate = arm
        with self._lock:
            self.plan = (plan or Plan()) if self.candidate is not None else None
        for arm in retire:
            arm.retire()  # closes when its last request is answered

    def _judge(self) -> None:
        with self._lock:
            production, candidate, plan = self.production, self.candidate, self.plan
        if candidate is None or plan is None or not plan.auto:
            return
        verdict = judge(production.record.snapshot(), candidate.record.snapshot(), plan.rules,
                        plan.mode)
        if verdict.action == "rollback":
            moved = registry.move_alias(self.name, CANDIDATE, None, self.registry_dir,
                                        expect=candidate.release)
        elif verdict.action == "promote":
            moved = registry.promote(self.name, CANDIDATE, self.production_alias,
                                     self.registry_dir, expect=candidate.release)
        else:
            return
        if moved:  # this process decided: say why, once, for every process to read
            write_plan(self.registry_dir, self.name, None)
            self.last_event = record_event(
                self.registry_dir, self.name, action=verdict.action, by="rule",
                release=candidate.release, model_version=candidate.version,
                production=production.release, reasons=list(verdict.reasons),
                candidate=candidate.record.snapshot().to_json(),
                production_record=production.record.snapshot().to_json())
        self._reconcile()


class _Pair:
    """One request read by both models: once both have answered, count whether they agree (on
    the candidate's record, since the question is about the candidate)."""

    def __init__(self, candidate: Arm, production: Arm) -> None:
        self.candidate, self.production = candidate, production
        self.read: dict[int, tuple[list[str] | None, float | None]] = {}
        self._lock = threading.Lock()

    def done(self, arm: Arm, texts: list[str] | None, confidence: float | None) -> None:
        with self._lock:
            self.read[id(arm)] = (texts, confidence)
            if len(self.read) < 2:
                return
        (a, conf_a), (b, conf_b) = self.read[id(self.candidate)], self.read[id(self.production)]
        if a is None or b is None:
            return  # a failed call is counted as an error, not as a disagreement
        gap = conf_b - conf_a if conf_a is not None and conf_b is not None else None
        self.candidate.record.comparison(a != b, gap)
