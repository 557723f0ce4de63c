"""``edgediff`` command line: the property run as a job.

    edgediff run  [--backend NAME[,NAME]] [--max-examples N] [--findings-dir DIR] [-n N] [--profile P]
    edgediff gate [same options]     exit 0: no new finding, 1: new findings, 2: usage, 3: backend setup failed

Both run the differential and metamorphic properties (``properties/``) through pytest, print
the op x backend matrix and write findings. Extra arguments after ``--`` go to pytest.
"""
from __future__ import annotations

import argparse
import os
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
                       ("gate", "like run; exit 1 only for findings not in the known-failures baseline")]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--backend", help="comma-separated backends (default: every available one)")
        p.add_argument("--adapter", action="append", default=[], help="user adapter MODULE:ATTR")
        p.add_argument("--max-examples", type=int, default=None, help="Hypothesis examples per test")
        p.add_argument("--findings-dir", default="findings")
        p.add_argument("--known-failures", default=None, help="baseline TOML (default fixtures/known_failures.toml)")
        p.add_argument("-n", "--workers", default="0", help="pytest-xdist workers ('auto', or a number; 0 = in-process)")
        p.add_argument("--profile", choices=PROFILES, default=None, help="Hypothesis profile")
        p.add_argument("--junitxml", default=None, help="also write pytest's JUnit XML here")
        p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    return ap


def _check_backends(names: str | None) -> None:
    import adapters
    if not names:
        return
    for name in (n.strip().partition("==")[0] for n in names.split(",")):
        if name not in adapters.BUILTINS:
            raise UsageExit(f"edgediff: unknown backend {name!r}; known backends: {', '.join(adapters.BUILTINS)}")


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
    if args.workers not in ("0", 0):
        out += ["-n", str(args.workers)]
    if args.junitxml:
        out += ["--junitxml", args.junitxml]
    return out + list(args.pytest_args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = _parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if args.max_examples is not None and args.max_examples < 1:
        print(f"edgediff: --max-examples must be >= 1, got {args.max_examples}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    try:
        _check_backends(args.backend)
    except UsageExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "gate" and args.backend:
        import adapters
        for name in args.backend.split(","):
            try:
                adapters.load(name.strip().partition("==")[0])
            except adapters.AdapterUnavailable as exc:
                print(f"edgediff gate: backend could not be set up: {exc}", file=sys.stderr)
                return 3
    import pytest
    os.chdir(REPO)
    code = pytest.main(pytest_args(args))
    if code in (0, 1):
        return int(code)
    return 2 if code in (4,) else int(code)


if __name__ == "__main__":
    sys.exit(main())
