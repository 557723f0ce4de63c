// edgediff's own pybind11 binding of CMSIS-NN's int8 kernels.
//
// Compiled by adapters/_cmsis_nn/build.py against the CMSIS-NN headers and static library
// the user built (CMSIS_NN_ROOT or CMSIS_NN_INCLUDE, plus CMSIS_NN_LIB); no CMSIS-NN source
// is part of edgediff. Every function takes NumPy arrays in CMSIS-NN's own layouts
// (activations NHWC, conv filters OHWI, depthwise filters 1HW(C*M), FC filters (O, K)),
// calls exactly the named CMSIS-NN function with a scratch buffer sized by the matching
// *_get_buffer_size function (NULL when that size is 0, as TFLite Micro passes it), and
// returns (output, arm_cmsis_nn_status).
//
// Every buffer the kernel sees is a copy surrounded by guard bytes: out-of-bounds reads
// see a fixed pattern (so they are deterministic, not random), and writes past the output
// or scratch buffer raise RuntimeError instead of silently corrupting the heap.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "arm_nnfunctions.h"

namespace py = pybind11;

namespace {

constexpr size_t kGuard = 256;              // bytes on each side of every buffer
constexpr uint8_t kPattern = 0xA5;          // guard (and fresh scratch) fill

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

// A copy of `n` elements of T with kGuard bytes of kPattern on both sides.
template <typename T>
class Guarded {
public:
    explicit Guarded(size_t n, const T *src = nullptr)
        : n_(n), mem_(n * sizeof(T) + 2 * kGuard, kPattern) {
        if (src != nullptr && n > 0) std::memcpy(data(), src, n * sizeof(T));
    }
    T *data() { return reinterpret_cast<T *>(mem_.data() + kGuard); }
    size_t size() const { return n_; }
    // How many guard bytes changed (0 when intact).
    size_t damaged() const {
        size_t bad = 0;
        for (size_t i = 0; i < kGuard; ++i) {
            bad += mem_[i] != kPattern;
            bad += mem_[kGuard + n_ * sizeof(T) + i] != kPattern;
        }
        return bad;
    }

private:
    size_t n_;
    std::vector<uint8_t> mem_;
};

template <typename T>
Guarded<T> copy_in(const Array<T> &a, const char *name, py::ssize_t expected = -1) {
    if (expected >= 0 && a.size() != expected)
        throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(expected) +
                                    " elements, got " + std::to_string(a.size()));
    return Guarded<T>(static_cast<size_t>(a.size()), a.data());
}

struct Scratch {
    explicit Scratch(int32_t size) : bytes(size > 0 ? size : 0) {
        ctx.buf = size > 0 ? static_cast<void *>(bytes.data()) : nullptr;
        ctx.size = size > 0 ? size : 0;
    }
    Guarded<int8_t> bytes;
    cmsis_nn_context ctx{};
};

void check_guards(const char *fn, Guarded<int8_t> &out, Scratch &scratch) {
    if (size_t bad = out.damaged())
        throw std::runtime_error(std::string(fn) + " wrote outside its output buffer (" +
                                 std::to_string(bad) + " guard bytes changed)");
    if (size_t bad = scratch.bytes.damaged())
        throw std::runtime_error(std::string(fn) + " wrote outside its scratch buffer of " +
                                 std::to_string(scratch.ctx.size) + " bytes (" +
                                 std::to_string(bad) + " guard bytes changed)");
}

py::array_t<int8_t> to_numpy(Guarded<int8_t> &out, std::vector<py::ssize_t> shape) {
    py::array_t<int8_t> result(shape);
    std::memcpy(result.mutable_data(), out.data(), out.size());
    return result;
}

cmsis_nn_dims dims(int32_t n, int32_t h, int32_t w, int32_t c) { return cmsis_nn_dims{n, h, w, c}; }
cmsis_nn_tile tile(std::pair<int32_t, int32_t> hw) { return cmsis_nn_tile{hw.second, hw.first}; }

using HW = std::pair<int32_t, int32_t>;   // (h, w) from Python

// ---- convolution -------------------------------------------------------------------------

enum class ConvKernel { Wrapper, Fast1x1, Strided1x1, OneByN, Generic };

py::tuple convolve(ConvKernel kernel, const char *fn, const Array<int8_t> &x, const Array<int8_t> &w,
                   const py::object &bias, int32_t input_offset, int32_t output_offset, HW stride,
                   HW padding, HW dilation, const Array<int32_t> &multipliers,
                   const Array<int32_t> &shifts, int32_t act_min, int32_t act_max, HW out_hw) {
    if (x.ndim() != 4 || w.ndim() != 4) throw std::invalid_argument("x and w must be 4-D");
    const cmsis_nn_dims in = dims(x.shape(0), x.shape(1), x.shape(2), x.shape(3));
    const cmsis_nn_dims filt = dims(w.shape(0), w.shape(1), w.shape(2), w.shape(3));
    const cmsis_nn_dims bias_dims = dims(1, 1, 1, filt.n);
    const cmsis_nn_dims out = dims(in.n, out_hw.first, out_hw.second, filt.n);
    cmsis_nn_conv_params params{};
    params.input_offset = input_offset;
    params.output_offset = output_offset;
    params.stride = tile(stride);
    params.padding = tile(padding);
    params.dilation = tile(dilation);
    params.activation = cmsis_nn_activation{act_min, act_max};

    auto xin = copy_in(x, "x");
    auto win = copy_in(w, "w");
    auto mult = copy_in(multipliers, "multipliers", filt.n);
    auto shift = copy_in(shifts, "shifts", filt.n);
    Guarded<int32_t> b(0);
    const int32_t *bias_ptr = nullptr;
    if (!bias.is_none()) {
        b = copy_in(bias.cast<Array<int32_t>>(), "bias", filt.n);
        bias_ptr = b.data();
    }
    cmsis_nn_per_channel_quant_params quant{mult.data(), shift.data()};

    int32_t size = 0;
    switch (kernel) {
    case ConvKernel::Wrapper: size = arm_convolve_wrapper_s8_get_buffer_size(&params, &in, &filt, &out); break;
    case ConvKernel::Fast1x1: size = arm_convolve_1x1_s8_fast_get_buffer_size(&in); break;
    case ConvKernel::Strided1x1: size = 0; break;     // "None is required by this function"
    case ConvKernel::OneByN: size = arm_convolve_1_x_n_s8_get_buffer_size(&params, &in, &filt, &out); break;
    case ConvKernel::Generic: size = arm_convolve_s8_get_buffer_size(&in, &filt); break;
    }
    Scratch scratch(size);
    Guarded<int8_t> o(static_cast<size_t>(out.n) * out.h * out.w * out.c);

    arm_cmsis_nn_status status = ARM_CMSIS_NN_SUCCESS;
    switch (kernel) {
    case ConvKernel::Wrapper:
        status = arm_convolve_wrapper_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                         &bias_dims, bias_ptr, &out, o.data());
        break;
    case ConvKernel::Fast1x1:
        status = arm_convolve_1x1_s8_fast(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                          &bias_dims, bias_ptr, &out, o.data());
        break;
    case ConvKernel::Strided1x1:
        status = arm_convolve_1x1_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                     &bias_dims, bias_ptr, &out, o.data());
        break;
    case ConvKernel::OneByN:
        status = arm_convolve_1_x_n_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                       &bias_dims, bias_ptr, &out, o.data());
        break;
    case ConvKernel::Generic:
        status = arm_convolve_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                 &bias_dims, bias_ptr, nullptr, &out, o.data());
        break;
    }
    check_guards(fn, o, scratch);
    return py::make_tuple(to_numpy(o, {out.n, out.h, out.w, out.c}), static_cast<int>(status), size);
}

// ---- depthwise convolution ---------------------------------------------------------------

enum class DwKernel { Wrapper, ThreeByThree, Opt, Generic };

py::tuple depthwise(DwKernel kernel, const char *fn, const Array<int8_t> &x, const Array<int8_t> &w,
                    const py::object &bias, int32_t ch_mult, int32_t input_offset, int32_t output_offset,
                    HW stride, HW padding, HW dilation, const Array<int32_t> &multipliers,
                    const Array<int32_t> &shifts, int32_t act_min, int32_t act_max, HW out_hw) {
    if (x.ndim() != 4 || w.ndim() != 4) throw std::invalid_argument("x and w must be 4-D");
    const cmsis_nn_dims in = dims(x.shape(0), x.shape(1), x.shape(2), x.shape(3));
    const cmsis_nn_dims filt = dims(w.shape(0), w.shape(1), w.shape(2), w.shape(3));
    const cmsis_nn_dims bias_dims = dims(1, 1, 1, filt.c);
    const cmsis_nn_dims out = dims(in.n, out_hw.first, out_hw.second, filt.c);
    cmsis_nn_dw_conv_params params{};
    params.input_offset = input_offset;
    params.output_offset = output_offset;
    params.ch_mult = ch_mult;
    params.stride = tile(stride);
    params.padding = tile(padding);
    params.dilation = tile(dilation);
    params.activation = cmsis_nn_activation{act_min, act_max};

    auto xin = copy_in(x, "x");
    auto win = copy_in(w, "w");
    auto mult = copy_in(multipliers, "multipliers", filt.c);
    auto shift = copy_in(shifts, "shifts", filt.c);
    Guarded<int32_t> b(0);
    const int32_t *bias_ptr = nullptr;
    if (!bias.is_none()) {
        b = copy_in(bias.cast<Array<int32_t>>(), "bias", filt.c);
        bias_ptr = b.data();
    }
    cmsis_nn_per_channel_quant_params quant{mult.data(), shift.data()};

    int32_t size = 0;
    switch (kernel) {
    case DwKernel::Wrapper: size = arm_depthwise_conv_wrapper_s8_get_buffer_size(&params, &in, &filt, &out); break;
    case DwKernel::Opt: size = arm_depthwise_conv_s8_opt_get_buffer_size(&in, &filt); break;
    case DwKernel::ThreeByThree:
    case DwKernel::Generic: size = 0; break;      // no *_get_buffer_size: no buffer
    }
    Scratch scratch(size);
    Guarded<int8_t> o(static_cast<size_t>(out.n) * out.h * out.w * out.c);

    arm_cmsis_nn_status status = ARM_CMSIS_NN_SUCCESS;
    switch (kernel) {
    case DwKernel::Wrapper:
        status = arm_depthwise_conv_wrapper_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt,
                                               win.data(), &bias_dims, bias_ptr, &out, o.data());
        break;
    case DwKernel::ThreeByThree:
        status = arm_depthwise_conv_3x3_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                           &bias_dims, bias_ptr, &out, o.data());
        break;
    case DwKernel::Opt:
        status = arm_depthwise_conv_s8_opt(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                           &bias_dims, bias_ptr, &out, o.data());
        break;
    case DwKernel::Generic:
        status = arm_depthwise_conv_s8(&scratch.ctx, &params, &quant, &in, xin.data(), &filt, win.data(),
                                       &bias_dims, bias_ptr, &out, o.data());
        break;
    }
    check_guards(fn, o, scratch);
    return py::make_tuple(to_numpy(o, {out.n, out.h, out.w, out.c}), static_cast<int>(status), size);
}

// ---- pooling, fully connected, add -------------------------------------------------------

py::tuple avgpool(const Array<int8_t> &x, HW kernel, HW stride, HW padding, int32_t act_min,
                  int32_t act_max, HW out_hw) {
    if (x.ndim() != 4) throw std::invalid_argument("x must be 4-D");
    const cmsis_nn_dims in = dims(x.shape(0), x.shape(1), x.shape(2), x.shape(3));
    const cmsis_nn_dims filt = dims(1, kernel.first, kernel.second, 1);
    const cmsis_nn_dims out = dims(in.n, out_hw.first, out_hw.second, in.c);
    cmsis_nn_pool_params params{};
    params.stride = tile(stride);
    params.padding = tile(padding);
    params.activation = cmsis_nn_activation{act_min, act_max};
    auto xin = copy_in(x, "x");
    const int32_t size = arm_avgpool_s8_get_buffer_size(out.w, in.c);
    Scratch scratch(size);
    Guarded<int8_t> o(static_cast<size_t>(out.n) * out.h * out.w * out.c);
    const arm_cmsis_nn_status status = arm_avgpool_s8(&scratch.ctx, &params, &in, xin.data(), &filt, &out, o.data());
    check_guards("arm_avgpool_s8", o, scratch);
    return py::make_tuple(to_numpy(o, {out.n, out.h, out.w, out.c}), static_cast<int>(status), size);
}

py::tuple fully_connected(const Array<int8_t> &x, const Array<int8_t> &w, const py::object &bias,
                          int32_t input_offset, int32_t filter_offset, int32_t output_offset,
                          int32_t multiplier, int32_t shift, int32_t act_min, int32_t act_max) {
    if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1))
        throw std::invalid_argument("x must be (N, K) and w (O, K)");
    const int32_t batches = x.shape(0), accum = x.shape(1), out_ch = w.shape(0);
    const cmsis_nn_dims in = dims(batches, 1, 1, accum);
    const cmsis_nn_dims filt = dims(accum, 1, 1, out_ch);      // n: accumulation depth, c: outputs
    const cmsis_nn_dims bias_dims = dims(1, 1, 1, out_ch);
    const cmsis_nn_dims out = dims(batches, 1, 1, out_ch);
    cmsis_nn_fc_params params{};
    params.input_offset = input_offset;
    params.filter_offset = filter_offset;
    params.output_offset = output_offset;
    params.activation = cmsis_nn_activation{act_min, act_max};
    cmsis_nn_per_tensor_quant_params quant{multiplier, shift};
    auto xin = copy_in(x, "x");
    auto win = copy_in(w, "w");
    Guarded<int32_t> b(0);
    const int32_t *bias_ptr = nullptr;
    if (!bias.is_none()) {
        b = copy_in(bias.cast<Array<int32_t>>(), "bias", out_ch);
        bias_ptr = b.data();
    }
    const int32_t size = arm_fully_connected_s8_get_buffer_size(&filt);
    Scratch scratch(size);
    if (size > 0) {
        // The Helium kernel reads precomputed kernel sums from the buffer (TFLite Micro fills it
        // with arm_vector_sum_s8 at prepare time); the scalar and DSP kernels ask for no buffer.
        arm_vector_sum_s8(static_cast<int32_t *>(scratch.ctx.buf), accum, out_ch, win.data(), input_offset,
                          filter_offset, bias_ptr);
    }
    Guarded<int8_t> o(static_cast<size_t>(batches) * out_ch);
    const arm_cmsis_nn_status status = arm_fully_connected_s8(&scratch.ctx, &params, &quant, &in, xin.data(),
                                                              &filt, win.data(), &bias_dims, bias_ptr, &out,
                                                              o.data());
    check_guards("arm_fully_connected_s8", o, scratch);
    return py::make_tuple(to_numpy(o, {batches, out_ch}), static_cast<int>(status), size);
}

py::tuple elementwise_add(const Array<int8_t> &x1, const Array<int8_t> &x2, int32_t input1_offset,
                          int32_t input1_multiplier, int32_t input1_shift, int32_t input2_offset,
                          int32_t input2_multiplier, int32_t input2_shift, int32_t left_shift,
                          int32_t output_offset, int32_t output_multiplier, int32_t output_shift,
                          int32_t act_min, int32_t act_max) {
    if (x1.size() != x2.size()) throw std::invalid_argument("x1 and x2 must have the same size");
    auto a = copy_in(x1, "x1");
    auto b = copy_in(x2, "x2");
    Guarded<int8_t> o(static_cast<size_t>(x1.size()));
    Scratch none(0);
    const arm_cmsis_nn_status status = arm_elementwise_add_s8(
        a.data(), b.data(), input1_offset, input1_multiplier, input1_shift, input2_offset, input2_multiplier,
        input2_shift, left_shift, o.data(), output_offset, output_multiplier, output_shift, act_min, act_max,
        static_cast<int32_t>(x1.size()));
    check_guards("arm_elementwise_add_s8", o, none);
    std::vector<py::ssize_t> shape(x1.shape(), x1.shape() + x1.ndim());
    return py::make_tuple(to_numpy(o, shape), static_cast<int>(status), 0);
}

}  // namespace

#define CONV_DEF(name, kernel)                                                                          \
    m.def(                                                                                              \
        #name,                                                                                          \
        [](const Array<int8_t> &x, const Array<int8_t> &w, const py::object &bias, int32_t input_offset, \
           int32_t output_offset, HW stride, HW padding, HW dilation, const Array<int32_t> &mult,        \
           const Array<int32_t> &shifts, int32_t act_min, int32_t act_max, HW out_hw) {                 \
            return convolve(kernel, #name, x, w, bias, input_offset, output_offset, stride, padding,    \
                            dilation, mult, shifts, act_min, act_max, out_hw);                          \
        },                                                                                              \
        py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("input_offset"), py::arg("output_offset"), \
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("multipliers"),             \
        py::arg("shifts"), py::arg("act_min"), py::arg("act_max"), py::arg("out_hw"),                   \
        "(out NHWC int8, arm_cmsis_nn_status, scratch bytes); padding is (top, left)")

#define DW_DEF(name, kernel)                                                                            \
    m.def(                                                                                              \
        #name,                                                                                          \
        [](const Array<int8_t> &x, const Array<int8_t> &w, const py::object &bias, int32_t ch_mult,      \
           int32_t input_offset, int32_t output_offset, HW stride, HW padding, HW dilation,             \
           const Array<int32_t> &mult, const Array<int32_t> &shifts, int32_t act_min, int32_t act_max,   \
           HW out_hw) {                                                                                 \
            return depthwise(kernel, #name, x, w, bias, ch_mult, input_offset, output_offset, stride,   \
                             padding, dilation, mult, shifts, act_min, act_max, out_hw);                \
        },                                                                                              \
        py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("ch_mult"), py::arg("input_offset"),       \
        py::arg("output_offset"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),           \
        py::arg("multipliers"), py::arg("shifts"), py::arg("act_min"), py::arg("act_max"),              \
        py::arg("out_hw"), "(out NHWC int8, arm_cmsis_nn_status, scratch bytes); padding is (top, left)")

PYBIND11_MODULE(_cmsis_nn_binding, m) {
    m.doc() = "edgediff's binding of CMSIS-NN int8 kernels (see adapters/cmsis_nn.py)";
    CONV_DEF(arm_convolve_wrapper_s8, ConvKernel::Wrapper);
    CONV_DEF(arm_convolve_1x1_s8_fast, ConvKernel::Fast1x1);
    CONV_DEF(arm_convolve_1x1_s8, ConvKernel::Strided1x1);
    CONV_DEF(arm_convolve_1_x_n_s8, ConvKernel::OneByN);
    CONV_DEF(arm_convolve_s8, ConvKernel::Generic);
    DW_DEF(arm_depthwise_conv_wrapper_s8, DwKernel::Wrapper);
    DW_DEF(arm_depthwise_conv_3x3_s8, DwKernel::ThreeByThree);
    DW_DEF(arm_depthwise_conv_s8_opt, DwKernel::Opt);
    DW_DEF(arm_depthwise_conv_s8, DwKernel::Generic);
    m.def("arm_avgpool_s8", &avgpool, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
          py::arg("act_min"), py::arg("act_max"), py::arg("out_hw"),
          "(out NHWC int8, arm_cmsis_nn_status, scratch bytes); padding is (top, left)");
    m.def("arm_fully_connected_s8", &fully_connected, py::arg("x"), py::arg("w"), py::arg("bias"),
          py::arg("input_offset"), py::arg("filter_offset"), py::arg("output_offset"), py::arg("multiplier"),
          py::arg("shift"), py::arg("act_min"), py::arg("act_max"),
          "(out (N, O) int8, arm_cmsis_nn_status, scratch bytes)");
    m.def("arm_elementwise_add_s8", &elementwise_add, py::arg("x1"), py::arg("x2"), py::arg("input1_offset"),
          py::arg("input1_multiplier"), py::arg("input1_shift"), py::arg("input2_offset"),
          py::arg("input2_multiplier"), py::arg("input2_shift"), py::arg("left_shift"), py::arg("output_offset"),
          py::arg("output_multiplier"), py::arg("output_shift"), py::arg("act_min"), py::arg("act_max"),
          "(out int8 shaped like x1, arm_cmsis_nn_status, 0)");
}
