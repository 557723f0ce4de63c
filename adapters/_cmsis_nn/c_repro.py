"""A CMSIS-NN finding as a C program against ``arm_nnfunctions.h``: what a CMSIS-NN maintainer runs.

``program(fn, case, expected, title)`` writes a ``main()`` that fills the CMSIS-NN structs the
way edgediff's binding does (``binding.cpp``: NHWC dims, per-channel quant params, the
function's own ``*_get_buffer_size`` scratch), calls ``fn`` once on the case's int8 data
(inline), and compares the output with the expected int8 values (``reference.quant``, i.e.
TFLite's reference kernels' arithmetic). The output buffer is pre-filled with 0xA5 (-91), so
an output the kernel never writes shows as -91, and the input is followed by 64 bytes of 0xA5,
so a read past its end shows too. It prints expected vs got and the status, and
exits 1 while the bug is present (or dies where the kernel faults).

    python -m adapters._cmsis_nn.c_repro DIR     # writes the pinned defects' repros into DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CONV = {"arm_convolve_wrapper_s8": "arm_convolve_wrapper_s8_get_buffer_size(&params, &in, &filt, &out)",
        "arm_convolve_1x1_s8_fast": "arm_convolve_1x1_s8_fast_get_buffer_size(&in)",
        "arm_convolve_1x1_s8": "0",
        "arm_convolve_1_x_n_s8": "arm_convolve_1_x_n_s8_get_buffer_size(&params, &in, &filt, &out)",
        "arm_convolve_s8": "arm_convolve_s8_get_buffer_size(&in, &filt)"}
DEPTHWISE = {"arm_depthwise_conv_wrapper_s8": "arm_depthwise_conv_wrapper_s8_get_buffer_size(&params, &in, &filt, &out)",
             "arm_depthwise_conv_3x3_s8": "0",
             "arm_depthwise_conv_s8_opt": "arm_depthwise_conv_s8_opt_get_buffer_size(&in, &filt)",
             "arm_depthwise_conv_s8": "0"}

TEMPLATE = '''// {title}
//
// Found by edgediff (differential testing against TFLite's reference int8 arithmetic).
// CMSIS-NN {version}. Build against a CMSIS-NN checkout and its CMake build (plain-C kernels):
//   cc -O1 repro.c -I CMSIS-NN/Include cmsis-build/libcmsis-nn.a -o repro && ./repro
// Prints expected vs got; exits 1 while the bug is present (or crashes where the kernel faults).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arm_nnfunctions.h"

static const int8_t input_values[{nx}] = {{{x}}};
static const int8_t weights[{nw}] = {{{w}}};
{bias_decl}static const int32_t multipliers[{nc}] = {{{mult}}};
static const int32_t shifts[{nc}] = {{{shift}}};
static const int8_t expected[{no}] = {{{expected}}};

int main(void) {{
    const cmsis_nn_dims in = {{{in_dims}}};
    const cmsis_nn_dims filt = {{{filt_dims}}};
    const cmsis_nn_dims bias_dims = {{1, 1, 1, {nc}}};
    const cmsis_nn_dims out = {{{out_dims}}};
    {params_type} params;
    memset(&params, 0, sizeof params);
    params.input_offset = {input_offset};
    params.output_offset = {output_offset};
{extra_params}    params.stride.w = {sw}; params.stride.h = {sh};
    params.padding.w = {pw}; params.padding.h = {ph};     // top/left; the output size implies the rest
    params.dilation.w = {dw}; params.dilation.h = {dh};
    params.activation.min = {act_min}; params.activation.max = {act_max};
    // the input followed by 64 guard bytes of 0xA5 (-91): a read past its end is visible
    int8_t *input = malloc({nx} + 64);
    memcpy(input, input_values, {nx});
    memset(input + {nx}, 0xA5, 64);
    cmsis_nn_per_channel_quant_params quant = {{(int32_t *) multipliers, (int32_t *) shifts}};
    cmsis_nn_context ctx;
    ctx.size = {buffer_size};
    ctx.buf = ctx.size > 0 ? malloc(ctx.size) : NULL;
    static int8_t output[{no}];
    memset(output, 0xA5, sizeof output);                  // -91: a value never written shows
    const arm_cmsis_nn_status status = {call};
    free(ctx.buf);
    free(input);
    int bad = 0;
    for (int i = 0; i < {no}; i++) {{
        if (output[i] != expected[i]) {{
            if (bad < 8) printf("output[%d] (NHWC order): expected %d, got %d\\n", i, expected[i], output[i]);
            bad++;
        }}
    }}
    printf("status %d (ARM_CMSIS_NN_SUCCESS is 0)\\n", (int) status);
    if (bad || status != ARM_CMSIS_NN_SUCCESS) {{
        printf("FAIL: %d of %d outputs differ\\n", bad, {no});
        return 1;
    }}
    printf("PASS\\n");
    return 0;
}}
'''


def _ints(a):
    return ", ".join(str(int(v)) for v in np.asarray(a).reshape(-1)) or "0"


def _pairs(v, default=1):
    if v is None:
        return default, default
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def program(fn, case, expected, title, version="99f736a6") -> str:
    """C source calling CMSIS-NN's ``fn`` (a conv or depthwise function) on ``case`` (the
    ``reference.quant`` keyword arguments: NHWC x, OHWI or (1, KH, KW, C*M) w, ...)."""
    x, w = np.asarray(case["x"], np.int8), np.asarray(case["w"], np.int8)
    expected = np.asarray(expected)
    depthwise = fn in DEPTHWISE
    if fn not in CONV and not depthwise:
        raise ValueError(f"no C repro template for {fn!r}; known: {sorted(CONV) + sorted(DEPTHWISE)}")
    nc = expected.shape[-1]
    padding = case.get("padding", 0)
    (top, _), (left, _) = padding if np.ndim(padding) == 2 else ((_pairs(padding)[0],) * 2, (_pairs(padding)[1],) * 2)
    sh, sw = _pairs(case.get("stride", 1))
    dh, dw = _pairs(case.get("dilation", 1))
    bias = case.get("bias")
    bias_decl = (f"static const int32_t bias[{nc}] = {{{_ints(bias)}}};\n" if bias is not None else "")
    bias_ptr = "bias" if bias is not None else "NULL"
    args = "&ctx, &params, &quant, &in, input, &filt, weights, &bias_dims, " + bias_ptr
    call = f"{fn}({args}, {'NULL, ' if fn == 'arm_convolve_s8' else ''}&out, output)"
    extra = f"    params.ch_mult = {int(w.shape[3]) // int(x.shape[3])};\n" if depthwise else ""
    return TEMPLATE.format(
        title=title, version=version, nx=x.size, x=_ints(x), nw=w.size, w=_ints(w), bias_decl=bias_decl,
        nc=nc, mult=_ints(case["multipliers"]), shift=_ints(case["shifts"]), no=expected.size,
        expected=_ints(expected), in_dims=", ".join(str(v) for v in x.shape),
        filt_dims=", ".join(str(v) for v in w.shape), out_dims=", ".join(str(v) for v in expected.shape),
        params_type="cmsis_nn_dw_conv_params" if depthwise else "cmsis_nn_conv_params",
        input_offset=int(case.get("input_offset", 0)), output_offset=int(case.get("output_offset", 0)),
        extra_params=extra, sw=sw, sh=sh, pw=left, ph=top, dw=dw, dh=dh,
        act_min=int(case.get("act_min", -128)), act_max=int(case.get("act_max", 127)),
        buffer_size=(CONV.get(fn) or DEPTHWISE[fn]), call=call)


# The CMSIS-NN defects properties/test_int8.py pins (strict xfails), as maintainers get them.
def pinned_cases():
    one = np.full(1, 1 << 30, np.int32)
    return {
        "grouped-conv-without-bias": ("arm_convolve_wrapper_s8", "conv2d_s8",
            "arm_convolve_s8 (via arm_convolve_wrapper_s8) faults on a grouped conv without bias: it "
            "advances the NULL bias pointer per group",
            dict(x=np.ones((1, 1, 1, 2), np.int8), w=np.ones((2, 1, 1, 1), np.int8), bias=None,
                 input_offset=0, output_offset=0, multipliers=np.full(2, 1 << 30, np.int32),
                 shifts=np.zeros(2, np.int32), groups=2)),
        "depthwise-3x3-right-padding-2": ("arm_depthwise_conv_wrapper_s8", "depthwise_conv2d_s8",
            "arm_depthwise_conv_3x3_s8 (chosen by arm_depthwise_conv_wrapper_s8) reads past the row "
            "end when the output size implies right padding >= 2",
            dict(x=np.ones((1, 1, 1, 1), np.int8), w=np.ones((1, 3, 3, 1), np.int8), bias=None,
                 input_offset=0, output_offset=0, multipliers=one, shifts=np.full(1, 1, np.int32),
                 padding=((1, 1), (1, 2)))),
        "conv-1x1-bottom-padding": ("arm_convolve_wrapper_s8", "conv2d_s8",
            "arm_convolve_wrapper_s8 picks a 1x1 kernel from top/left padding 0 alone and leaves the "
            "outputs that bottom padding adds unwritten (status SUCCESS)",
            dict(x=np.ones((1, 1, 1, 1), np.int8), w=np.ones((1, 1, 1, 1), np.int8), bias=None,
                 input_offset=0, output_offset=0, multipliers=one, shifts=np.full(1, 1, np.int32),
                 padding=((0, 1), (0, 0)))),
    }


def write_pinned(directory, rounding="double") -> list[Path]:
    from reference import quant
    out = []
    for name, (fn, op, title, case) in pinned_cases().items():
        expected = getattr(quant, op)(**case, rounding=rounding)
        d = Path(directory) / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "repro.c").write_text(program(fn, case, expected, f"CMSIS-NN: {title}"))
        out.append(d / "repro.c")
    return out


if __name__ == "__main__":
    for path in write_pinned(sys.argv[1] if len(sys.argv) > 1 else "fixtures/cmsis_nn"):
        print(path)
