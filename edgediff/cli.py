"""``edgediff`` command line: the property run as a job.

    edgediff run  [--backend NAME[,NAME]] [--max-examples N] [--findings-dir DIR] [-n N] [--profile P]
    edgediff gate [same options]     exit 0: no new finding, 1: new findings, 2: usage, 3: backend setup failed
    edgediff fuzz --duration 2h [--backend ...] [-n auto]   long campaign under the `fuzz` profile
    edgediff replay FINDING_DIR      exit 1 if it still reproduces, 0 if not
    edgediff baseline FINDINGS_DIR [--file fixtures/known_failures.toml] [--promote]
    edgediff report DIR... [--out report.html] [--markdown summary.md]
    edgediff network mobilenet_v2|fbnet_a --backend NAME [--width W] [--size S]   exit 0: no layer
                     diverges, 1: one does (finding written), 2: usage, 3: backend cannot run graphs
    edgediff power [--mutant NAME] [--family F] [--profile ci] [--write]   exit 1 if a mutant escapes

Both run the differential and metamorphic properties (``properties/``) through pytest, print
the op x backend matrix and write findings. Extra arguments after ``--`` go to pytest.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILES = ("dev", "ci", "thorough")


class UsageExit(SystemExit):
    pass


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgediff", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in [("run", "bounded property run over the chosen backends (the main job)"),
                       ("gate", "like run; exit 1 only for findings not in the known-failures baseline"),
                       ("fuzz", "long campaign: fuzz profile, a time budget, findings written as they happen")]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--backend", help="comma-separated backends (default: every available one)")
        p.add_argument("--adapter", action="append", default=[], help="user adapter MODULE:ATTR")
        p.add_argument("--max-examples", type=int, default=None, help="Hypothesis examples per test")
        p.add_argument("--findings-dir", default="findings")
        p.add_argument("--known-failures", default=None, help="baseline TOML (default fixtures/known_failures.toml)")
        p.add_argument("-n", "--workers", default=None,
                       help="pytest-xdist workers ('auto' or a number; 0 = in-process; default 0, fuzz: auto)")
        p.add_argument("--profile", choices=PROFILES, default=None, help="Hypothesis profile")
        p.add_argument("--junitxml", default=None, help="also write pytest's JUnit XML here")
        p.add_argument("--html-report", default=None, help="write the HTML report here")
        if name == "fuzz":
            p.add_argument("--duration", required=True, type=parse_duration,
                           help="how long, e.g. 90s, 30m, 2h")
        p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    p = sub.add_parser("replay", help="re-run one finding; exit 1 if it still reproduces")
    p.add_argument("finding", help="a finding directory (findings/<id> or fixtures/corpus/<id>)")
    p = sub.add_parser("baseline", help="add findings to the known-failures baseline")
    p.add_argument("findings_dir")
    p.add_argument("--file", default=str(REPO / "fixtures" / "known_failures.toml"))
    p.add_argument("--promote", action="store_true", help="also copy them into fixtures/corpus/")
    from edgediff.network_cli import add_parser as add_network_parser
    add_network_parser(sub)
    p = sub.add_parser("report", help="merge findings directories (shards) into one report")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", default="report.html")
    p.add_argument("--markdown", default=None)
    p = sub.add_parser("power", help="measure bug-finding power on the planted-bug mutants")
    p.add_argument("--mutant", action="append", default=[], help="a mutant name (repeatable; default all)")
    p.add_argument("--family", action="append", default=[],
                   help="torch_float, litert_float or int8 (repeatable; default all)")
    p.add_argument("--profile", choices=PROFILES, default="ci", help="Hypothesis profile (default ci)")
    p.add_argument("--max-examples", type=int, default=None, help="override the profile's budget")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    return ap


def _check_backends(names: str | None) -> None:
    import adapters
    if not names:
        return
    for name in (n.strip().partition("==")[0].partition("@")[0] for n in names.split(",")):
        if name not in adapters.BUILTINS:
            raise UsageExit(f"edgediff: unknown backend {name!r}; known backends: {', '.join(adapters.BUILTINS)}")


def resolve_paths(args) -> str | None:
    """Make every path option absolute against the caller's working directory (the run itself
    happens in edgediff's folder), and check that the findings folder can be written; the
    problem as one line, or None."""
    for opt in ("findings_dir", "known_failures", "junitxml", "html_report"):
        value = getattr(args, opt, None)
        if value:
            setattr(args, opt, os.path.abspath(os.path.expanduser(value)))
    if getattr(args, "backend", None):          # ggml@PATH: a checkout, relative to the caller
        args.backend = ",".join(
            f"{n.partition('@')[0]}@{os.path.abspath(os.path.expanduser(n.partition('@')[2]))}"
            if n.partition("@")[2] else n for n in (m.strip() for m in args.backend.split(",")))
    if args.known_failures and not Path(args.known_failures).is_file():
        return f"--known-failures {args.known_failures} does not exist (or is not a file)"
    for opt in ("junitxml", "html_report"):
        value = getattr(args, opt, None)
        if value:                   # its folder is made, as --findings-dir's is (a fresh clone
            try:                    # has no findings/ yet); one that cannot be is the error
                Path(value).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return f"--{opt.replace('_', '-')} {value}: cannot create {Path(value).parent}: {exc.strerror}"
    findings = Path(args.findings_dir)
    if findings.exists() and not findings.is_dir():
        return f"--findings-dir {findings} exists and is not a directory"
    existing = findings
    while not existing.exists():                 # created by the run, not before it starts
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"--findings-dir {findings} cannot be written ({existing} is not a writable directory)"
    if args.known_failures:
        from edgediff.known import load_known
        try:
            load_known(args.known_failures)
        except ValueError as exc:
            return str(exc)
    import adapters
    for spec in getattr(args, "adapter", []) or []:
        try:
            adapters.load_spec(spec)
        except adapters.UsageError as exc:
            return str(exc)
    try:                          # last, once everything else holds: the run will write here
        findings.mkdir(parents=True, exist_ok=True)
        probe = findings / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return f"--findings-dir {findings} cannot be written: {exc.strerror or exc}"
    return None


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"--duration {text!r}: use a number with s, m, h or d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--duration {text!r} must be positive")
    return value


def pytest_args(args) -> list[str]:
    out = [str(REPO / "properties"), "-p", "no:cacheprovider", "-q", "--rootdir", str(REPO),
           "--findings-dir", args.findings_dir]
    if args.backend:
        out += ["--backend", args.backend]
    for spec in args.adapter:
        out += ["--adapter", spec]
    if args.max_examples is not None:
        out += ["--max-examples", str(args.max_examples)]
    if args.known_failures:
        out += ["--known-failures", args.known_failures]
    if args.profile:
        out += ["--hypothesis-profile", args.profile]
    if args.workers not in (None, "0", 0):
        out += ["-n", str(args.workers)]
    if args.junitxml:
        out += ["--junitxml", args.junitxml]
    if args.html_report:
        out += ["--html-report", args.html_report]
    if getattr(args, "duration", None):
        out += ["--time-budget", str(args.duration), "--progress", "30"]
        if not args.profile:
            out += ["--hypothesis-profile", "fuzz"]
    return out + list(args.pytest_args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    sys.path.insert(0, str(REPO))
    if args.command == "network":
        from edgediff.network_cli import cmd_network
        return cmd_network(args)
    if args.command == "power":
        return cmd_power(args)
    if args.command in ("replay", "baseline", "report"):
        import adapters
        try:
            return {"replay": cmd_replay, "baseline": cmd_baseline, "report": cmd_report}[args.command](args)
        except adapters.UsageError as exc:
            print(f"edgediff {args.command}: {exc}", file=sys.stderr)
            return 2
        except adapters.AdapterUnavailable as exc:
            print(f"edgediff {args.command}: backend could not be set up: {exc}", file=sys.stderr)
            return 3
    if args.max_examples is not None and args.max_examples < 1:
        print(f"edgediff: --max-examples must be >= 1, got {args.max_examples}", file=sys.stderr)
        return 2
    try:
        _check_backends(args.backend)
    except UsageExit as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = resolve_paths(args)
    if problem:
        print(f"edgediff {args.command}: {problem}", file=sys.stderr)
        return 2
    if args.command == "gate" and args.backend:
        import adapters
        for name in args.backend.split(","):
            name = name.strip()
            try:
                if "==" in name:            # a pin: its environment must build and report it
                    from edgediff.pinning import load_pinned
                    from properties.ops import OPS
                    load_pinned(name, OPS).close()
                else:
                    adapters.load(name)
            except adapters.AdapterUnavailable as exc:
                print(f"edgediff gate: backend could not be set up: {exc}", file=sys.stderr)
                return 3
            except adapters.UsageError as exc:
                print(f"edgediff gate: --backend: {exc}", file=sys.stderr)
                return 2
    import pytest
    os.chdir(REPO)          # pytest's rootdir; every path option is absolute by now
    if args.command == "fuzz":
        if args.workers is None:
            args.workers = "auto"
        # SIGTERM ends a campaign like Ctrl-C: pytest finishes the session, prints the
        # summary and keeps every finding written so far
        from edgediff.pytest_plugin import STOP_REQUESTED

        def on_sigterm(*_):
            STOP_REQUESTED.set()            # honoured between examples if the raise is lost
            raise KeyboardInterrupt()
        signal.signal(signal.SIGTERM, on_sigterm)
    code = pytest.main(pytest_args(args))
    if args.command == "fuzz" and code == 2:       # interrupted: a normal end of a campaign
        return 0
    if code in (0, 1):
        return int(code)
    return 2 if code in (4,) else int(code)


if __name__ == "__main__":
    sys.exit(main())


def cmd_replay(args) -> int:
    from edgediff.replay import replay
    outcome = replay(args.finding)
    if outcome.failed:
        print(f"still reproduces: {outcome.message()}")
        return 1
    print(f"does not reproduce: {outcome.kind}" + (f" ({outcome.detail})" if outcome.detail else ""))
    return 0


def cmd_baseline(args) -> int:
    from edgediff.findings import load_findings
    from edgediff.known import load_known
    from edgediff.replay import promote
    from properties.ops import SHRINK_DEFAULTS
    path = Path(args.file)
    known = load_known(path) if path.exists() else []
    added = []
    for rec in load_findings(args.findings_dir):
        sig = rec["signature"]
        case_shapes = rec["shapes"]
        already = any(k.matches(rec["adapter"], rec["op"], rec["path"], rec["kind"], {}, rec["layout"],
                                case_shapes, sig["pattern"], rec.get("backend_facts"), rec.get("detail", ""),
                                rec.get("version")) for k in known)
        if args.promote:
            print(f"promoted {promote(Path(args.findings_dir) / rec['id'])}")
        if already:
            continue
        added.append(rec)
        feats = ", ".join(f'"{f}"' for f in sig["pattern"] if f not in SHRINK_DEFAULTS)
        entry = (f'\n[[known]]\nadapter = "{rec["adapter"]}"\nop = "{rec["op"]}"\npath = "{rec["path"]}"\n'
                 f'kind = "{rec["kind"]}"\npattern = [{feats}]\n'
                 f'reason = "TODO: describe ({rec["id"]})"\nlink = ""\n')
        with open(path, "a") as fh:
            fh.write(entry)
    print(f"{len(added)} new entr{'y' if len(added) == 1 else 'ies'} written to {path}")
    return 0


def cmd_report(args) -> int:
    from edgediff import report
    for d in args.dirs:
        if not Path(d).is_dir():
            raise __import__("adapters").UsageError(f"{d} is not a directory")
    out = report.html_report(args.dirs, Path(args.out))
    tally, _ = report.gather(args.dirs)
    md = report.summary_markdown(tally)
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)
    print(f"HTML report: {out}")
    return 0


def cmd_power(args) -> int:
    import json

    from edgediff import power
    if args.max_examples is not None and args.max_examples < 1:
        print(f"edgediff power: --max-examples must be >= 1, got {args.max_examples}", file=sys.stderr)
        return 2
    try:
        chosen = power.select(args.mutant, args.family)
    except ValueError as exc:
        print(f"edgediff power: {exc}", file=sys.stderr)
        return 2
    os.chdir(REPO)

    def progress(r):
        status = (f"detected after {r.examples_to_detect} examples, {r.seconds_to_detect:.2f} s; "
                  f"shrunk to {r.repro_elements} elements" if r.detected
                  else f"ESCAPED ({r.examples_run} examples)")
        print(f"{r.mutant:<34} {r.op:<18} {status}", flush=True)

    results = power.measure_all(chosen, args.profile, args.max_examples, progress)
    text = power.table(results, args.profile)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(power.as_dicts(results), indent=1))
    if args.write:
        from benchmarks.results import write_section
        command = "edgediff power" + "".join(f" --mutant {m}" for m in args.mutant) + \
            "".join(f" --family {f}" for f in args.family) + f" --profile {args.profile} --write"
        write_section("Bug-finding power: planted-bug mutants", command, text)
    return 0 if all(r.detected for r in results) else 1
