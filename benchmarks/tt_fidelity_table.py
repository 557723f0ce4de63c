"""EMULATED error of TT-NN conv2d per (dtype, MathFidelity) on MobileNetV2's conv layers.

    .venv/bin/python benchmarks/tt_fidelity_table.py [--size 96] [--every 1] [--fp32-acc]

Prints a Markdown table: for each conv layer of MobileNetV2 (benchmarks/mobilenet_v2.py) and each
(dtype, fidelity), the error of reference.tt_emulation.emulated_conv2d against the float64 golden
reference.conv2d. This is an EMULATION of Tensix numerics, not a hardware measurement; see
reference/tt_emulation.py for the model and its assumptions.

dtype is the format of the activations, the weights (and bias) and the output together, as in a
TT-NN conv whose input tensor, Conv2dConfig.weights_dtype and dtype are all that format.
Accumulation is in bfloat16 (TT-NN's default, fp32_dest_acc_en=False) unless --fp32-acc.

Inputs (seeded): the stem gets N(0, 1) pixels; every other layer gets ReLU6(N(0, 1.5))
activations (what a MobileNetV2 layer sees after BN + ReLU6); weights N(0, 2 / fan_in) (He);
bias N(0, 0.1). Batch 1. Metrics per cell: ``max|y - g| / max|g|`` (max error relative to the
layer's output range; per-element relative error is meaningless for outputs near 0) and the
Pearson correlation (PCC, what TT-NN's own tests check, e.g. ttnn.comparison.comp_pcc).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402
from mobilenet_v2 import conv_layers  # noqa: E402
from reference.tt_emulation import emulated_conv2d  # noqa: E402

DTYPES = ("bfloat16", "bfloat8_b")
FIDELITIES = ("LoFi", "HiFi2", "HiFi4")


def layer_inputs(rng, name, cin, cout, k, groups, hw):
    if name == "stem":
        x = rng.standard_normal((1, cin, hw, hw))
    else:
        x = np.clip(rng.standard_normal((1, cin, hw, hw)) * 1.5, 0.0, 6.0)
    fan_in = (cin // groups) * k * k
    w = rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
    b = rng.standard_normal(cout) * 0.1
    return x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)


def errors(y, g):
    scale = np.abs(g).max()
    rel = float(np.abs(y - g).max() / scale) if scale > 0 else float(np.abs(y - g).max())
    pcc = float(np.corrcoef(y.ravel(), g.ravel())[0, 1]) if y.size > 1 and np.std(y) > 0 else float("nan")
    return rel, pcc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96, help="input resolution (96 or 224)")
    ap.add_argument("--every", type=int, default=1, help="keep every N-th layer (subsample when slow)")
    ap.add_argument("--fp32-acc", action="store_true", help="emulate fp32_dest_acc_en=True")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    layers = conv_layers(args.size)[::args.every]
    combos = [(d, f) for d in DTYPES for f in FIDELITIES]
    acc = "float32" if args.fp32_acc else "bfloat16"
    print(f"EMULATED TT-NN conv2d error vs float64 golden, MobileNetV2 {args.size}x{args.size}, "
          f"{len(layers)} conv layers, accumulation {acc}. Cell: max|err|/max|golden| / PCC.\n")
    head = "| layer | cin→cout, k, s, g, hw | " + " | ".join(f"{d} {f}" for d, f in combos) + " |"
    print(head)
    print("|" + "---|" * (2 + len(combos)))
    worst = {combo: [0.0, 1.0] for combo in combos}
    t0 = time.perf_counter()
    for name, cin, cout, k, s, g, hw in layers:
        x, w, b = layer_inputs(rng, name, cin, cout, k, g, hw)
        pad = k // 2
        golden = reference.conv2d(x, w, b, s, pad, 1, g)
        cells = []
        for d, f in combos:
            y = emulated_conv2d(x, w, b, s, pad, 1, g, act_dtype=d, weight_dtype=d, fidelity=f,
                                fp32_acc=args.fp32_acc)
            rel, pcc = errors(y, golden)
            worst[(d, f)][0] = max(worst[(d, f)][0], rel)
            worst[(d, f)][1] = min(worst[(d, f)][1], pcc)
            cells.append(f"{rel:.2e} / {pcc:.5f}")
        print(f"| {name} | {cin}→{cout}, {k}, {s}, {g}, {hw} | " + " | ".join(cells) + " |", flush=True)
    print("| **worst** | | " + " | ".join(f"**{worst[c][0]:.2e} / {worst[c][1]:.5f}**" for c in combos) + " |")
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
