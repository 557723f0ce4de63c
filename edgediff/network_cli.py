"""``edgediff network``: run a whole network on a backend and localize the first diverging layer.

    edgediff network mobilenet_v2|fbnet_a --backend NAME [--width 0.35] [--size 96] [--seed N]
                     [--layout contiguous|channels_last] [--weights FILE.npz]
                     [--findings-dir DIR] [--plot FILE.png] [--no-reduce]

Prints the per-layer error table (every node the backend returns, compared with the golden op
on the backend's own inputs of that node; see ``edgediff.graph_check``) and exits 0 when no
layer diverges, 1 when one does (after writing a finding for the minimal failing subgraph),
2 on a usage error, 3 when the backend cannot be set up here or cannot run graphs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("network", help="run a whole network (MobileNetV2, FBNet-A) and localize diverging layers",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("network", help="mobilenet_v2 or fbnet_a")
    p.add_argument("--backend", default=None, help="backend name (e.g. ggml, xnnpack, torch)")
    p.add_argument("--adapter", default=None, help="a user adapter MODULE:ATTR with run_graph, instead of --backend")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier, 0.35-1.0 (default 1.0)")
    p.add_argument("--size", type=int, default=224, help="input size, 96-224 (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, BN statistics and input")
    p.add_argument("--layout", default="contiguous", help="memory format of the input (contiguous, channels_last)")
    p.add_argument("--weights", default=None, help=".npz of real weights by tensor name (see edgediff/networks.py)")
    p.add_argument("--findings-dir", default="findings")
    p.add_argument("--plot", default=None, help="write the per-layer error plot (PNG) here")
    p.add_argument("--no-reduce", action="store_true", help="do not reduce a divergence to a subgraph finding")


class Usage(Exception):
    pass


def _adapter(args):
    import adapters
    from edgediff.graph_run import load_graph_adapter
    if bool(args.backend) == bool(args.adapter):
        raise Usage("give exactly one of --backend NAME or --adapter MODULE:ATTR")
    if args.backend:
        if args.backend not in adapters.BUILTINS:
            raise Usage(f"unknown backend {args.backend!r}; known backends: {', '.join(adapters.BUILTINS)}")
        return load_graph_adapter(args.backend), args.backend
    try:
        obj = adapters.load_spec(args.adapter)
    except adapters.UsageError as exc:
        raise Usage(str(exc)) from None
    if not callable(getattr(obj, "run_graph", None)):
        raise Usage(f"--adapter {args.adapter!r} has no run_graph")
    return obj, None


def plot_errors(checks, path, title: str) -> None:
    """Per-layer worst error/bound (log scale; 1 = the bound) and max abs error, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [c for c in checks if c.stats is not None]
    xs = range(len(shown))
    # exact results (error 0) sit on the floor of the log axes
    ratios = [max(c.worst_ratio, 1e-4) for c in shown]
    positive = [c.max_abs_error for c in shown if c.max_abs_error > 0] or [1.0]
    errs = [max(c.max_abs_error, min(positive) / 10) for c in shown]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(8, len(shown) * 0.12), 6), sharex=True)
    colors = ["tab:red" if c.status != "ok" else "tab:blue" for c in shown]
    a1.bar(xs, ratios, color=colors)
    a1.axhline(1.0, color="k", lw=0.8, ls="--")
    a1.set_yscale("log")
    a1.set_ylim(bottom=1e-4)
    a1.set_ylabel("worst error / bound (1 = allowed)")
    a1.set_title(title)
    a2.plot(xs, errs, marker=".", lw=0.8)
    a2.set_yscale("log")
    a2.set_ylabel("max abs error")
    step = max(1, len(shown) // 40)
    a2.set_xticks(list(xs)[::step])
    a2.set_xticklabels([c.name for c in shown][::step], rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_network(args) -> int:
    import adapters
    from edgediff import networks
    from edgediff.graph_check import table
    from edgediff.graph_run import NoGraphRunner, run_graph
    try:
        if args.network not in networks.NETWORKS:
            raise Usage(f"network must be one of {', '.join(networks.NETWORKS)}, got {args.network!r}")
        if args.layout not in ("contiguous", "channels_last"):
            raise Usage(f"--layout must be contiguous or channels_last, got {args.layout!r}")
        try:
            graph = networks.build(args.network, args.width, args.size, args.seed, args.layout)
        except ValueError as exc:
            raise Usage(f"--width/--size: {exc}") from None
        if args.weights:
            if not Path(args.weights).is_file():
                raise Usage(f"--weights {args.weights}: no such file")
            try:
                n, total = networks.load_weights(graph, args.weights)
            except ValueError as exc:
                raise Usage(str(exc)) from None
            print(f"weights: {n} of {total} constants from {args.weights}; the rest seeded random (seed {args.seed})")
        adapter, backend = _adapter(args)
    except Usage as exc:
        print(f"edgediff network: {exc}", file=sys.stderr)
        return 2
    except (adapters.AdapterUnavailable, NoGraphRunner) as exc:
        print(f"edgediff network: backend cannot run graphs here: {exc}", file=sys.stderr)
        return 3
    label = f"{args.network} width={args.width} size={args.size} seed={args.seed} layout={args.layout}"
    print(f"{label}: {len(graph.nodes)} nodes on {adapter.name} {adapter.version}")
    t0 = time.perf_counter()
    outcome = run_graph(graph, adapter)
    print(f"ran in {time.perf_counter() - t0:.1f} s: {outcome.kind}")
    if outcome.checks:
        print(table(outcome.checks))
        last = [c for c in outcome.checks if c.end_to_end_max_abs is not None]
        if last:
            print(f"end to end: output {graph.output} max abs error vs the golden network "
                  f"{last[-1].end_to_end_max_abs:.3g}")
    if args.plot and outcome.checks:
        plot_errors(outcome.checks, args.plot, f"{label} on {adapter.name}")
        print(f"plot: {args.plot}")
    if not outcome.failed:
        if outcome.kind == "unsupported":
            print(f"unsupported: {outcome.detail}")
            return 3
        print("no layer diverges")
        return 0
    bad = outcome.first_divergence
    print(f"first diverging layer: {bad.name} ({bad.op})" if bad else f"{outcome.kind}: {outcome.detail}")
    if not args.no_reduce:
        from edgediff.graph_findings import reduce_divergence, single_op_findings, write_graph_finding
        reduced = reduce_divergence(outcome, adapter) if bad else outcome
        directory = write_graph_finding(reduced, args.findings_dir, origin=label, spec=args.adapter)
        print(f"minimal failing subgraph ({len(reduced.graph.nodes)} nodes): finding written to {directory}")
        if backend and len(reduced.graph.nodes) == 1:
            for path, d in single_op_findings(reduced, backend, args.findings_dir):
                print(f"  also reproduces as a single op on path {path}: {d}")
    return 1
