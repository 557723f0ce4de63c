"""The conv layer shapes of MobileNetV2 (Sandler et al. 2018, table 2) at a given input size.

The network itself (and this table) lives in ``edgediff/networks.py``; this module keeps the
name the conv benchmarks import."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgediff.networks import MOBILENET_V2_BLOCKS as BLOCKS  # noqa: E402,F401
from edgediff.networks import mobilenet_v2_conv_layers as conv_layers  # noqa: E402,F401
