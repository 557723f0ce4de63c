"""pytest integration: options, Hypothesis profiles, target parametrization, findings, matrix.

Loaded from the repository's ``conftest.py``. Every property test that takes the
``target`` argument is parametrized over (op x adapter x path) from the op table and
the selected adapters; its failures are written as findings by ``pytest_runtest_makereport``
from the shrunk example Hypothesis re-raises last.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

import adapters
from edgediff import runner
from edgediff.findings import FindingStore
from edgediff.known import load_known
from edgediff.session import Tally, merge, matrix, target_key

# Set by `edgediff fuzz`'s SIGTERM handler. Its KeyboardInterrupt alone can land where Python
# swallows exceptions (a gc callback; seen in CI) and the campaign ran to its end; the flag makes
# the next example stop the session too.
STOP_REQUESTED = threading.Event()

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
            HealthCheck.differing_executors]
PROFILES = {
    "dev": dict(max_examples=20),
    "ci": dict(max_examples=40, print_blob=True, derandomize=True),   # reproducible gate runs
    "thorough": dict(max_examples=1000),
    "fuzz": dict(max_examples=1_000_000),        # long campaigns: bounded by --time-budget
}
for _name, _kw in PROFILES.items():
    settings.register_profile(_name, deadline=None, suppress_health_check=_SLOW_OK, **_kw)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KNOWN = REPO / "fixtures" / "known_failures.toml"


@dataclass(frozen=True)
class Target:
    op: str
    label: str          # backend name as the user selected it
    adapter: object
    path: str

    @property
    def key(self) -> str:
        return target_key(self.op, self.label, self.path)

    def __str__(self):
        return f"{self.op}-{self.label}-{self.path}"

    __repr__ = __str__

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


@dataclass(repr=False)
class EdgeDiffRun:
    selected: list            # [(label, adapter)]
    unavailable: dict         # label -> reason
    store: FindingStore
    known: list
    specials: bool
    worker: str
    tally: Tally = field(default_factory=Tally)
    specs: dict = field(default_factory=dict)   # label -> spec for --adapter adapters
    budget_per_target: float | None = None     # seconds, from --time-budget
    started: dict = field(default_factory=dict)  # target key -> first example's time
    last_progress_write: float = 0.0
    shrink_known: bool = False                 # --shrink-known: known failures stop and shrink too
    item_known: dict = field(default_factory=dict)   # entry key -> entry, hit by the running test
    raised: set = field(default_factory=set)   # target keys with a new failure (being shrunk)

    def __repr__(self):
        return f"EdgeDiffRun(worker={self.worker!r}, backends={[label for label, _ in self.selected]})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))

    def check(self, target: Target, case) -> runner.Outcome:
        """Run one example; raise a FindingFailure for a failing outcome."""
        from properties.ops import OPS
        self.within_budget(target)
        outcome = runner.run_case(case, target.adapter, target.path, OPS[case.op])
        return self.account(target, outcome)

    def within_budget(self, target: Target) -> None:
        """Past its share of --time-budget, a target stops drawing new examples (a target that
        raised a new failure keeps going, so Hypothesis can finish shrinking it). A stop asked
        for by a signal (``STOP_REQUESTED``) ends the session here, between two examples."""
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt("stop requested (SIGTERM)")
        now = time.monotonic()
        start = self.started.setdefault(target.key, now)
        if now - self.last_progress_write > PROGRESS_WRITE_EVERY:
            self.last_progress_write = now
            write_progress(self)
        if (self.budget_per_target is not None and now - start > self.budget_per_target
                and target.key not in self.raised):
            pytest.skip(BUDGET_REACHED)

    def account(self, target: Target, outcome: runner.Outcome, stop_on_known: bool = False) -> runner.Outcome:
        """Count one example. A failure raises a FindingFailure, so Hypothesis shrinks it; a
        failure that a known-failures entry matches is logged and counted instead, and the search
        goes on for new ones (a baselined bug neither masks a new bug in the same target nor
        spends the run shrinking a case that is already filed). ``stop_on_known`` (replayed
        corpus cases) and ``--shrink-known`` raise for known failures too."""
        self.tally.example(target.key, outcome.kind, outcome.detail, outcome.seconds,
                           outcome.stats.worst_ratio if outcome.stats is not None else None)
        if outcome.failed:
            pattern = pattern_of(outcome)
            entry = None if (stop_on_known or self.shrink_known) else self.known_entry(outcome, pattern)
            self.store.log(outcome, pattern, known=entry.reason if entry is not None else None)
            if entry is None:
                self.raised.add(target.key)
                raise runner.failure_for(outcome)
            self.tally.known_matched.add(entry.key)
            self.tally.finding(target.key, "known:" + entry.key, known=True)
            self.item_known[entry.key] = entry
        return outcome

    def known_entry(self, outcome: runner.Outcome, pattern):
        case = outcome.case
        for entry in self.known:
            if entry.matches(outcome.adapter, case.op, outcome.path, outcome.kind, case.params,
                             case.layout, {k: v.shape for k, v in case.inputs.items()}, pattern,
                             outcome.extra, outcome.detail, outcome.version):
                return entry
        return None

    def report(self, target: Target, failures) -> list:
        """Write the shrunk failures as findings; returns the known entries (None for new ones)."""
        verdicts = []
        for failure in failures:
            outcome = failure.outcome
            pattern = pattern_of(outcome)
            self.store.log(outcome, pattern, shrunk=True)
            entry = self.known_entry(outcome, pattern)
            known = None if entry is None else {"reason": entry.reason, "link": entry.link}
            if entry is not None:
                self.tally.known_matched.add(entry.key)
            source = getattr(target.adapter, "repro_source", None)
            if label_spec := self.specs.get(target.label):
                outcome.extra["spec"] = label_spec
            directory, _ = self.store.write(outcome, pattern,
                                            source(outcome.case.op, outcome.path) if callable(source) else None,
                                            known, standalone_script(target.adapter, outcome))
            self.tally.finding(target.key, directory.name, entry is not None)
            verdicts.append(entry)
        return verdicts


def standalone_script(adapter, outcome: runner.Outcome) -> tuple[str, str] | None:
    """(file name, text): the adapter's own repro for this outcome (``standalone_repro``, a
    ``repro.py`` unless the adapter names another file, e.g. ``repro.c``), when it writes one."""
    write = getattr(adapter, "standalone_repro", None)
    if not callable(write) or outcome.expected is None:
        return None
    from edgediff.findings import issue_title
    case = outcome.case
    bound = outcome.bound if outcome.bound is not None else np.zeros(np.shape(outcome.expected))
    try:
        text = write(case.op, outcome.path, case.inputs, case.params, case.layout,
                     outcome.expected, bound, issue_title(outcome))
        return (getattr(adapter, "standalone_repro_file", "repro.py"), text) if text else None
    except Exception as exc:       # the finding still gets the generic repro; say why
        outcome.extra["standalone_repro_failed"] = f"{type(exc).__name__}: {exc}"
        return None


def pattern_of(outcome: runner.Outcome) -> tuple:
    from properties.ops import OPS
    from properties.relations import RELATIONS
    op = outcome.case.op
    spec = OPS.get(RELATIONS[op].primary if op in RELATIONS else op)
    return spec.pattern(outcome.case) if spec else (outcome.case.layout,)


# ---- options and configuration ------------------------------------------------------------

def pytest_addoption(parser):
    g = parser.getgroup("edgediff")
    g.addoption("--backend", default=None, metavar="NAME[,NAME]",
                help=f"backends to test (default: all available). Built-ins: {', '.join(adapters.BUILTINS)}")
    g.addoption("--adapter", action="append", default=[], metavar="MODULE:ATTR",
                help="a user adapter object; without --backend only these run")
    g.addoption("--max-examples", type=int, default=None, help="Hypothesis examples per test")
    g.addoption("--findings-dir", default="findings", help="where findings are written")
    g.addoption("--known-failures", default=None, metavar="FILE",
                help=f"baseline of known failures (default: {DEFAULT_KNOWN.relative_to(REPO)} if present)")
    g.addoption("--specials", action="store_true", help="also draw NaN/Inf inputs")
    g.addoption("--shrink-known", action="store_true",
                help="known failures stop the search and are shrunk and written like new ones "
                     "(default: they are counted and the search goes on for new failures)")
    g.addoption("--time-budget", type=float, default=None, metavar="SECONDS",
                help="stop generating new examples after this long, shared across (op, backend, path)")
    g.addoption("--progress", type=float, default=None, metavar="SECONDS",
                help="print a progress line every SECONDS (default: every 30 s when --time-budget is set)")
    g.addoption("--html-report", default=None, metavar="FILE",
                help="write the single-file HTML report (needs matplotlib)")
    g.addoption("--isolate", action="store_true",
                help="run every adapter in a worker process (adapters that declare isolated=True always do)")


def _select(config):
    selected, unavailable, specs = [], {}, {}
    names = config.getoption("backend")
    user = config.getoption("adapter")
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
    elif user:
        wanted = []
    else:
        wanted = adapters.default_backends()
    force = config.getoption("isolate")
    for name in wanted:
        try:
            if "==" in name:
                from edgediff.pinning import load_pinned
                from properties.ops import OPS
                selected.append((name, load_pinned(name, OPS)))
                continue
            adapter = _maybe_isolated(adapters.load(name), name, force)
            label = adapter.name if "@" in name else name         # ggml@ -> ggml@v0.21.0-...
            if any(label == other for other, _ in selected):
                raise adapters.UsageError(f"{name!r} is {label}, which is already selected")
            selected.append((label, adapter))
        except adapters.UsageError as exc:
            raise pytest.UsageError(f"--backend: {exc}") from None
        except adapters.AdapterUnavailable as exc:
            unavailable[name] = str(exc)
    for spec in user:
        try:
            obj = adapters.load_spec(spec)
        except adapters.UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
        label = obj.name
        specs[label] = spec
        try:
            selected.append((label, _maybe_isolated(obj, spec, force)))
        except adapters.AdapterUnavailable as exc:
            unavailable[label] = str(exc)
    return selected, unavailable, specs


def _maybe_isolated(adapter, spec: str, force: bool):
    if not (force or getattr(adapter, "isolated", False)):
        return adapter
    from edgediff.isolation import isolate
    from properties.ops import OPS
    if not any(adapters.paths(adapter, op) for op in OPS) and not callable(getattr(adapter, "run_graph", None)):
        return adapter      # no op the generic properties call (cortex_m: its own property file)
    return isolate(adapter, spec, OPS)


@pytest.hookimpl(trylast=True)          # after Hypothesis' plugin has loaded its profile
def pytest_configure(config):
    profile = os.environ.get("EDGEDIFF_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    chosen = config.getoption("hypothesis_profile", None) or profile
    overrides = {}
    n = config.getoption("max_examples")
    if n is not None:
        if n < 1:
            raise pytest.UsageError(f"--max-examples must be >= 1, got {n}")
        overrides["max_examples"] = n
    if os.environ.get("EDGEDIFF_DB") or os.environ.get("EDGEDIFF_DB_READONLY"):
        from edgediff.database import from_environment
        try:
            overrides["database"] = from_environment()
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    settings.register_profile("edgediff-run", parent=settings.get_profile(chosen), **overrides)
    settings.load_profile("edgediff-run")

    known_path = config.getoption("known_failures")
    try:
        known = load_known(known_path) if known_path else (
            load_known(DEFAULT_KNOWN) if DEFAULT_KNOWN.exists() else [])
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    selected, unavailable, specs = _select(config)
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    findings_dir = Path(config.getoption("findings_dir"))
    if worker == "main":  # the controller (or a plain run) starts a fresh tally
        shutil.rmtree(findings_dir / ".stats", ignore_errors=True)
    config.stash[RUN_KEY] = EdgeDiffRun(selected, unavailable, FindingStore(findings_dir, worker),
                                        known, config.getoption("specials"), worker, specs=specs,
                                        shrink_known=config.getoption("shrink_known"))


RUN_KEY = pytest.StashKey[EdgeDiffRun]()
BUDGET_REACHED = "edgediff: time budget for this target used up"
PROGRESS_WRITE_EVERY = 2.0


def write_progress(run: EdgeDiffRun) -> None:
    """This process's counts, for the controller's progress line."""
    rows = run.tally.rows
    data = {"examples": sum(r["examples"] for r in rows.values()),
            "failed": sum(r["failed_examples"] for r in rows.values()),
            "findings": sum(len(r["new"]) + len(r["known"]) for r in rows.values()),
            "per_backend": {}}
    for key, r in rows.items():
        b = data["per_backend"].setdefault(key.split("|")[1], [0, 0.0])
        b[0] += r["examples"]
        b[1] += r["seconds"]
    run.tally.dump(run.store.root / ".stats" / f"{run.worker}.json")   # survives an interrupt
    path = run.store.root / ".progress" / f"{run.worker}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _progress_loop(run: EdgeDiffRun, every: float, budget: float | None, stop, stream) -> None:
    t0 = time.monotonic()
    while not stop.wait(every):
        totals = {"examples": 0, "failed": 0, "findings": 0}
        per_backend = Counter()
        busy = Counter()
        for f in (run.store.root / ".progress").glob("*.json"):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            for k in totals:
                totals[k] += d[k]
            for b, (n, secs) in d["per_backend"].items():
                per_backend[b] += n
                busy[b] += secs
        elapsed = time.monotonic() - t0
        left = f", {_hms(max(0.0, budget - elapsed))} left" if budget else ""
        rates = ", ".join(f"{b} {n / max(busy[b], 1e-9):.0f}/s" for b, n in sorted(per_backend.items()))
        stream.write(f"edgediff: {totals['examples']} examples, {totals['failed']} failing, "
                     f"{totals['findings']} findings, {_hms(elapsed)} elapsed{left}"
                     f"{' (' + rates + ')' if rates else ''}\n")
        stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def pytest_sessionstart(session):
    run = session.config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    shutil.rmtree(run.store.root / ".progress", ignore_errors=True)
    budget = session.config.getoption("time_budget")
    every = session.config.getoption("progress") or (30.0 if budget else None)
    if every:
        stop = threading.Event()
        thread = threading.Thread(target=_progress_loop, daemon=True,
                                  args=(run, every, budget, stop, sys.__stderr__))
        thread.start()
        session.config.stash[PROGRESS_KEY] = stop


PROGRESS_KEY = pytest.StashKey[object]()


def pytest_collection_modifyitems(session, config, items):
    run = config.stash.get(RUN_KEY, None)
    budget = config.getoption("time_budget")
    if run is None or not budget:
        return
    n = sum(1 for it in items if getattr(it, "callspec", None) is not None and isinstance(
        it.callspec.params.get("target") or it.callspec.params.get("relation_target"), Target))
    workers = max(1, int(getattr(config.option, "numprocesses", 0) or 0) if str(
        getattr(config.option, "numprocesses", "0")).isdigit() else os.cpu_count() or 1)
    run.budget_per_target = budget * (workers if run.worker != "main" else 1) / max(1, n)


def pytest_generate_tests(metafunc):
    if "target" in metafunc.fixturenames:
        _parametrize(metafunc, "target", lambda adapter, op: adapters.paths(adapter, op), _op_names())
    if "relation_target" in metafunc.fixturenames:
        from properties.relations import RELATIONS
        def relation_paths(adapter, name):
            rel = RELATIONS[name]
            if not all(adapters.paths(adapter, op) for op in rel.needs):
                return ()
            return adapters.paths(adapter, rel.primary)
        _parametrize(metafunc, "relation_target", relation_paths, list(RELATIONS))


def _op_names():
    from properties.ops import OPS
    return list(OPS)


def _parametrize(metafunc, argname, paths_of, names):
    run = metafunc.config.stash[RUN_KEY]
    params = []
    for label, adapter in run.selected:
        for op in names:
            for path in paths_of(adapter, op):
                t = Target(op, label, adapter, path)
                params.append(pytest.param(t, id=str(t)))
    for label, reason in run.unavailable.items():
        params.append(pytest.param(None, id=f"{label}-unavailable",
                                   marks=pytest.mark.skip(reason=f"backend unavailable: {reason}")))
    if not params:
        params.append(pytest.param(None, id="no-backend",
                                   marks=pytest.mark.skip(reason="no backend selected")))
    metafunc.parametrize(argname, params)


@pytest.fixture(scope="session")
def edgediff_run(request) -> EdgeDiffRun:
    return request.config.stash[RUN_KEY]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    # One Hypothesis database key per (op, adapter, path): the test function is shared.
    inner = getattr(getattr(item.obj, "hypothesis", None), "inner_test", None)
    if inner is not None:
        inner._hypothesis_internal_add_digest = item.nodeid.encode()
        # Slow backends (ExecuTorch lowers a program per example) may cap examples per test in
        # the dev and ci profiles; an explicit --max-examples or the thorough/fuzz profiles win.
        params = item.callspec.params if hasattr(item, "callspec") else {}
        target = params.get("target") or params.get("relation_target")
        current = settings()
        cap = getattr(getattr(target, "adapter", None), "max_examples", None)
        if callable(cap):                      # a cap per (op or relation, path)
            cap = cap(target.op, target.path)
        capped = (cap and item.config.getoption("max_examples") is None
                  and current.max_examples <= PROFILES["ci"]["max_examples"])
        if capped:
            kw = {"max_examples": min(cap, current.max_examples)}
            if current.derandomize:       # the ci profile: gate on unshrunk failures of slow backends
                kw["phases"] = [Phase.explicit, Phase.reuse, Phase.generate]
            current = settings(current, **kw)
        item.obj._hypothesis_internal_use_settings = current
    run = item.config.stash.get(RUN_KEY, None)
    if run is not None:
        run.item_known = {}           # known failures this test hits (see EdgeDiffRun.account)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = item.callspec.params if hasattr(item, "callspec") else {}
    target = params.get("target") or params.get("relation_target")
    if call.when != "call" or not isinstance(target, Target):
        return
    run = item.config.stash[RUN_KEY]
    if call.excinfo is not None and BUDGET_REACHED in str(call.excinfo.value):
        report.outcome, report.longrepr = "passed", None        # budget used: not a skip
        return
    if call.excinfo is not None:
        failures = runner.findings_in(call.excinfo.value)
        if not failures:
            return
        verdicts = run.report(target, failures)
        if all(v is not None for v in verdicts):
            report.outcome = "skipped"
            report.wasxfail = "known failure: " + "; ".join(sorted({v.reason for v in verdicts}))
    elif report.passed and run.item_known:          # only known failures: the target is xfail
        report.outcome = "skipped"
        report.wasxfail = "known failure: " + "; ".join(sorted({e.reason for e in run.item_known.values()}))
    elif report.passed and (reason := run.tally.all_unsupported(target.key)):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"every example unsupported: {reason}")


def pytest_sessionfinish(session):
    stop = session.config.stash.get(PROGRESS_KEY, None)
    if stop is not None:
        stop.set()
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None and (run.tally.rows or run.tally.known_matched):
        run.tally.dump(run.store.root / ".stats" / f"{run.worker}.json")


def fixed_known(run: EdgeDiffRun, tally: Tally) -> list[str]:
    """Known entries for a target that ran but that no failure matched: fixed upstream?"""
    ran = {k for k, row in tally.rows.items() if row["examples"]}
    versions = {label: getattr(adapter, "version", None) for label, adapter in run.selected}
    out = []
    for entry in run.known:
        applies = any(entry.applies_to(*reversed_key(k), versions.get(reversed_key(k)[0])) for k in ran)
        if applies and entry.key not in tally.known_matched:
            out.append(entry.key)
    return out


def reversed_key(key: str):
    op, adapter, path = key.split("|")
    return adapter, op, path


def pytest_terminal_summary(terminalreporter, config):
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    tally = merge(run.store.root / ".stats")
    if not tally.rows:
        return
    text = matrix(tally.rows, fixed_known(run, tally))
    if run.unavailable:
        text += "\nunavailable backends:" + "".join(f"\n  {r}" for r in run.unavailable.values())
    unsupported = Counter()
    for key, row in tally.rows.items():
        for reason, n in row["unsupported_reasons"].items():
            unsupported[(key.split("|")[1], reason)] += n
    if unsupported:
        text += "\nmost common unsupported reasons:" + "".join(
            f"\n  {a}: {r} ({n})" for (a, r), n in unsupported.most_common(6))
    terminalreporter.write_sep("=", "edgediff summary")
    terminalreporter.write_line(text)
    run.store.root.mkdir(parents=True, exist_ok=True)
    (run.store.root / "summary.txt").write_text(text + "\n")
    from edgediff import report
    fixed = fixed_known(run, tally)
    markdown = report.summary_markdown(tally, fixed, run.unavailable)
    (run.store.root / "summary.md").write_text(markdown)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as fh:
            fh.write(markdown)
    if config.getoption("html_report"):
        try:
            path = report.html_report([run.store.root], Path(config.getoption("html_report")), fixed)
            terminalreporter.write_line(f"edgediff: HTML report written to {path}")
        except ImportError as exc:
            terminalreporter.write_line(f"edgediff: no HTML report ({exc}); pip install matplotlib")
