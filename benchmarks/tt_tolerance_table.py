"""How tight the TT-NN device tolerance is: EMULATED device error / bound on MobileNetV2's layers.

    .venv/bin/python benchmarks/tt_tolerance_table.py [--size 96] [--every 1] [--no-write]

For each MobileNetV2 conv layer (benchmarks/mobilenet_v2.py; inputs as in tt_fidelity_table.py:
ReLU6 activations, He weights, N(0, 0.1) bias, batch 1) and its global average pool, and each
(dtype, MathFidelity) path of the ttnn adapter, the result of the EMULATION of Tensix numerics
(reference/tt_emulation.py: never measured on a device) is compared with the per-element bound
that the adapter's ``arithmetic()`` declares for that path (edgediff/tolerance.py, "Tensix").

Cell: ``max error/bound`` over every element of every layer of that kind (must be < 1: the
emulation is a correct implementation of the modelled arithmetic; the closer to 1 the tighter)
and, in parentheses, the median over nonzero elements of ``bound / |expected|`` (how wide the
envelope is relative to the values), the largest over the layers of that kind.
Writes the table to benchmarks/RESULTS.md (section "TT-NN tolerance envelope (EMULATED)").
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import adapters.ttnn as tt  # noqa: E402
import reference  # noqa: E402
from edgediff.case import Case  # noqa: E402
from edgediff.tolerance import Arithmetic  # noqa: E402
from mobilenet_v2 import conv_layers  # noqa: E402
from properties.ops import OPS  # noqa: E402
from reference.tt_emulation import emulated_conv2d, emulated_mean  # noqa: E402
from results import write_section  # noqa: E402
from tt_fidelity_table import layer_inputs  # noqa: E402

COMBOS = [(d, f) for d in tt.DTYPES for f in tt.FIDELITIES]
KINDS = ("stem", "expand", "dw s1", "dw s2", "project", "head", "pool (mean)")


def kind_of(name: str, stride: int) -> str:
    last = name.split(".")[-1]
    return f"dw s{stride}" if last == "dw" else last


def device_arithmetic(op: str, dtype: str, fidelity: str) -> Arithmetic:
    return Arithmetic(**vars(tt.arithmetic(op, f"device/{dtype}/{fidelity}")).copy())


def ratios(case: Case, observed, arith: Arithmetic):
    expected = OPS[case.op].expected(case)
    bound = OPS[case.op].bound(case, expected, arith)
    err = np.abs(observed - expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        over = float(np.max(np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0))))
        nonzero = np.abs(expected) > 0           # (a ReLU6'd pool input can give exact zeros)
        width = float(np.median(bound[nonzero] / np.abs(expected[nonzero]))) if nonzero.any() else np.inf
    return over, width


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96, help="input resolution")
    ap.add_argument("--every", type=int, default=1, help="keep every N-th layer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    layers = conv_layers(args.size)[::args.every]
    cells = {(k, c): [0.0, 0.0] for k in KINDS for c in COMBOS}
    counts = dict.fromkeys(KINDS, 0)
    t0 = time.perf_counter()
    last = None
    for name, cin, cout, k, s, g, hw in layers:
        x, w, b = layer_inputs(rng, name, cin, cout, k, g, hw)
        params = {"stride": s, "padding": k // 2, "dilation": 1, "groups": g}
        case = Case("conv2d", {"x": x, "w": w, "b": b}, params)
        kind = kind_of(name, s)
        counts[kind] += 1
        for d, f in COMBOS:
            y = emulated_conv2d(x, w, b, **params, act_dtype=d, weight_dtype=d, fidelity=f)
            over, width = ratios(case, y, device_arithmetic("conv2d", d, f))
            cell = cells[(kind, (d, f))]
            cell[0], cell[1] = max(cell[0], over), max(cell[1], width)
        last = reference.conv2d(x, w, b, **params)
        print(f"{name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    # global average pool of the head's ReLU6 output
    pooled = np.clip(last, 0.0, 6.0).astype(np.float32)
    case = Case("mean", {"x": pooled}, {"dim": (2, 3), "keepdim": True})
    counts["pool (mean)"] = 1
    for d, f in COMBOS:
        y = emulated_mean(pooled, (2, 3), True, act_dtype=d, fidelity=f)
        cells[("pool (mean)", (d, f))] = list(ratios(case, y, device_arithmetic("mean", d, f)))

    lines = ["| layer kind (n) | " + " | ".join(f"{d} {f}" for d, f in COMBOS) + " |",
             "|" + "---|" * (1 + len(COMBOS))]
    for kind in KINDS:
        if counts[kind]:
            lines.append(f"| {kind} ({counts[kind]}) | "
                         + " | ".join(f"{cells[(kind, c)][0]:.2f} ({cells[(kind, c)][1]:.2f})" for c in COMBOS)
                         + " |")
    worst = max(v[0] for v in cells.values())
    body = (f"**EMULATION, not a measurement**: no Tenstorrent device was used. The device result is "
            f"reference/tt_emulation.py's model of Tensix numerics; the bound is what "
            f"`adapters/ttnn.py` `arithmetic()` declares for each `device/<dtype>/<fidelity>` path "
            f"(edgediff/tolerance.py, \"Tensix\": block-format inputs relative to 16-wide block "
            f"maxima, fidelity truncation per product, bfloat16 Dst with the probabilistic "
            f"lambda={6.0:g} sqrt(m) u accumulation term, output packing). MobileNetV2 "
            f"{args.size}x{args.size}, {len(layers)} conv layers + the global average pool, batch 1.\n\n"
            f"Cell: max over elements and layers of emulated |error| / bound (< 1 required; closer to "
            f"1 = tighter), and in parentheses the largest per-layer median of bound / |expected|.\n\n"
            + "\n".join(lines)
            + f"\n\nWorst error/bound anywhere: {worst:.2f}. ({time.perf_counter() - t0:.0f} s)")
    print(body)
    if not args.no_write:
        command = "python benchmarks/tt_tolerance_table.py" + (f" --size {args.size}" if args.size != 96 else "") \
            + (f" --every {args.every}" if args.every != 1 else "")
        write_section("TT-NN tolerance envelope (EMULATED)", command, body)


if __name__ == "__main__":
    main()
