"""Golden NumPy implementations of the ops edge backends re-implement.

All inputs are NCHW NumPy arrays; computation and results are float64.
Semantics follow PyTorch; invalid configurations raise ``ValueError``.
"""
from .add import add
from .batchnorm import batch_norm, conv2d_batch_norm, fold_batch_norm
from .conv import conv2d, depthwise_conv2d
from .elementwise import clamp
from .padding import same_padding_2d, tflite_same_padding
from .reduce import mean
from .shape import permute, view

__all__ = ["conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute",
           "add", "batch_norm", "fold_batch_norm", "conv2d_batch_norm",
           "tflite_same_padding", "same_padding_2d"]
