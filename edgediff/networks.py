"""Whole networks as Graphs of reference ops, with seeded random weights (no downloads).

- ``mobilenet_v2(width, size)``: MobileNetV2 (Sandler et al. 2018, table 2): stem conv 3x3/2,
  inverted residual blocks (1x1 expand -> BN -> ReLU6, 3x3 depthwise -> BN -> ReLU6, 1x1
  project -> BN, residual add when stride 1 and channels match), 1x1 head to 1280 -> BN ->
  ReLU6, global average pool, and the 1000-way classifier as a 1x1 conv with bias. Width
  multipliers 0.35-1.0, input sizes 96-224.
- ``fbnet_a(width, size)``: FBNet-A style (the block pattern of Wu et al. 2019: kernel 3 and 5
  depthwise, expansions 1/3/6, a 1504-channel head), written as a deployed network is: BN
  folded away, every conv *with bias*, ReLU (clamp min 0) as the activation. The exact searched
  architecture is not reproduced; the layer types and channel counts are.

Weights are He-normal and BN statistics random (mean ~ N(0, 0.1), var ~ U(0.5, 1.5)), all from
``seed``; so is the input. ``load_weights(graph, path)`` replaces constants by name from an
``.npz`` of real weights (names as ``Graph.constants`` lists them, e.g. ``b1.0.dw.w``).
Layer names read as the paper's table: ``stem``, ``b<block>.<repeat>.<expand|dw|project>``, ``head``.
"""
from __future__ import annotations

import numpy as np

from edgediff.graph import Graph, GraphBuilder, infer_shapes

# (expansion t, output channels c, repeats n, first stride s), Sandler et al. 2018, table 2
MOBILENET_V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]
# (expansion, output channels, repeats, first stride, depthwise kernel): FBNet-A's pattern
FBNET_A_BLOCKS = [(1, 16, 1, 1, 3), (6, 24, 1, 2, 3), (1, 24, 2, 1, 3), (6, 32, 1, 2, 5),
                  (3, 32, 2, 1, 3), (6, 64, 1, 2, 5), (3, 64, 3, 1, 3), (6, 112, 1, 1, 5),
                  (3, 112, 3, 1, 3), (6, 184, 1, 2, 5), (6, 184, 3, 1, 5), (6, 352, 1, 1, 3)]
FBNET_A_HEAD = 1504
WIDTHS = (0.35, 1.0)
SIZES = (96, 224)
NETWORKS = ("mobilenet_v2", "fbnet_a")


def channels(c: int, width: float) -> int:
    """Channel count at width multiplier ``width``, rounded to a multiple of 8 (at least 8)."""
    return max(8, int(c * width + 4) // 8 * 8)


def _check(width, size):
    if not WIDTHS[0] <= float(width) <= WIDTHS[1]:
        raise ValueError(f"width must be in [{WIDTHS[0]}, {WIDTHS[1]}], got {width}")
    if not SIZES[0] <= int(size) <= SIZES[1] or int(size) != size:
        raise ValueError(f"size must be an integer in [{SIZES[0]}, {SIZES[1]}], got {size}")


class _Net:
    """Builder helpers shared by the two networks."""

    def __init__(self, seed, layout):
        self.rng = np.random.default_rng(seed)
        self.b = GraphBuilder(layout)

    def conv(self, name, x, cin, cout, k, stride, groups=1, bias=False):
        fan_in = (cin // groups) * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        ins = {"x": x, "w": self.b.const(f"{name}.w", w)}
        if bias:
            ins["b"] = self.b.const(f"{name}.b", self.rng.normal(0.0, 0.1, cout))
        op = "depthwise_conv2d" if groups == cin and groups > 1 else "conv2d"
        params = {"stride": stride, "padding": k // 2}
        if op == "conv2d":
            params["groups"] = groups
        return self.b.add_node(name, op, ins, **params)

    def bn(self, name, x, c):
        r = self.rng
        ins = {"x": x,
               "running_mean": self.b.const(f"{name}.running_mean", r.normal(0.0, 0.1, c)),
               "running_var": self.b.const(f"{name}.running_var", r.uniform(0.5, 1.5, c)),
               "weight": self.b.const(f"{name}.weight", r.uniform(0.5, 1.5, c)),
               "bias": self.b.const(f"{name}.bias", r.normal(0.0, 0.1, c))}
        return self.b.add_node(name, "batch_norm", ins, eps=1e-5)

    def classifier(self, x, c, classes):
        pooled = self.b.add_node("pool", "mean", {"x": x}, dim=(2, 3), keepdim=True)
        logits = self.conv("classifier", pooled, c, classes, 1, 1, bias=True)
        return self.b.add_node("logits", "view", {"x": logits}, shape=(-1, classes))


def mobilenet_v2(width: float = 1.0, size: int = 224, seed: int = 0, layout: str = "contiguous",
                 classes: int = 1000) -> Graph:
    _check(width, size)
    net = _Net(seed, layout)
    b = net.b
    x = b.input("input", net.rng.standard_normal((1, 3, size, size)))
    cin = channels(32, width)

    def conv_bn(name, x, ci, co, k, stride, groups=1, relu6=True):
        y = net.bn(f"{name}.bn", net.conv(name, x, ci, co, k, stride, groups), co)
        return b.add_node(f"{name}.relu6", "clamp", {"x": y}, min=0.0, max=6.0) if relu6 else y

    x = conv_bn("stem", x, 3, cin, 3, 2)
    for bi, (t, c, n, s) in enumerate(MOBILENET_V2_BLOCKS):
        cout = channels(c, width)
        for i in range(n):
            stride = s if i == 0 else 1
            block_in, hidden = x, cin * t
            if t != 1:
                x = conv_bn(f"b{bi}.{i}.expand", x, cin, hidden, 1, 1)
            x = conv_bn(f"b{bi}.{i}.dw", x, hidden, hidden, 3, stride, groups=hidden)
            x = conv_bn(f"b{bi}.{i}.project", x, hidden, cout, 1, 1, relu6=False)
            if stride == 1 and cin == cout:
                x = b.add_node(f"b{bi}.{i}.residual", "add", {"x": x, "y": block_in})
            cin = cout
    head = channels(1280, width) if width > 1.0 else 1280
    x = conv_bn("head", x, cin, head, 1, 1)
    net.classifier(x, head, classes)
    return b.build()


def fbnet_a(width: float = 1.0, size: int = 224, seed: int = 0, layout: str = "contiguous",
            classes: int = 1000) -> Graph:
    _check(width, size)
    net = _Net(seed, layout)
    b = net.b
    x = b.input("input", net.rng.standard_normal((1, 3, size, size)))

    def conv_relu(name, x, ci, co, k, stride, groups=1, relu=True):
        y = net.conv(name, x, ci, co, k, stride, groups, bias=True)
        return b.add_node(f"{name}.relu", "clamp", {"x": y}, min=0.0, max=None) if relu else y

    cin = channels(16, width)
    x = conv_relu("stem", x, 3, cin, 3, 2)
    for bi, (t, c, n, s, k) in enumerate(FBNET_A_BLOCKS):
        cout = channels(c, width)
        for i in range(n):
            stride = s if i == 0 else 1
            block_in, hidden = x, cin * t
            if t != 1:
                x = conv_relu(f"b{bi}.{i}.expand", x, cin, hidden, 1, 1)
            x = conv_relu(f"b{bi}.{i}.dw", x, hidden, hidden, k, stride, groups=hidden)
            x = conv_relu(f"b{bi}.{i}.project", x, hidden, cout, 1, 1, relu=False)
            if stride == 1 and cin == cout:
                x = b.add_node(f"b{bi}.{i}.residual", "add", {"x": x, "y": block_in})
            cin = cout
    x = conv_relu("head", x, cin, FBNET_A_HEAD, 1, 1)
    net.classifier(x, FBNET_A_HEAD, classes)
    return b.build()


BUILDERS = {"mobilenet_v2": mobilenet_v2, "fbnet_a": fbnet_a}


def build(name: str, width: float = 1.0, size: int = 224, seed: int = 0, layout: str = "contiguous") -> Graph:
    if name not in BUILDERS:
        raise ValueError(f"network must be one of {', '.join(BUILDERS)}, got {name!r}")
    return BUILDERS[name](width=width, size=size, seed=seed, layout=layout)


def load_weights(graph: Graph, path) -> tuple[int, int]:
    """Replace the graph's constants by the arrays of the same name in the ``.npz`` at ``path``
    (an array named ``input`` replaces the input). Returns (replaced, constants in the graph).
    A name with the wrong shape raises ValueError naming it; names the graph lacks are errors
    too (a misspelt layer must not pass silently)."""
    with np.load(path) as data:
        unknown = [k for k in data.files if k not in graph.tensors]
        if unknown:
            raise ValueError(f"weights {path}: {len(unknown)} arrays name no tensor of this network, "
                             f"e.g. {unknown[:3]}; names look like {graph.constants[:3]}")
        for k in data.files:
            a = np.asarray(data[k], dtype=np.float32)
            if a.shape != graph.tensors[k].shape:
                raise ValueError(f"weights {path}: {k} has shape {a.shape}, the network needs "
                                 f"{graph.tensors[k].shape}")
            graph.tensors[k] = a
        replaced = len([k for k in data.files if k not in graph.inputs])
    infer_shapes(graph)
    return replaced, len(graph.constants)


def mobilenet_v2_conv_layers(size: int = 224, width: float = 1.0):
    """Every conv as (name, in_ch, out_ch, kernel, stride, groups, in_hw), in network order
    (the layer table the conv benchmarks use)."""
    layers, hw = [], size
    cin = channels(32, width)
    layers.append(("stem", 3, cin, 3, 2, 1, hw))
    hw = (hw + 1) // 2
    for bi, (t, c, n, s) in enumerate(MOBILENET_V2_BLOCKS):
        cout = channels(c, width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            if t != 1:
                layers.append((f"b{bi}.{i}.expand", cin, hidden, 1, 1, 1, hw))
            layers.append((f"b{bi}.{i}.dw", hidden, hidden, 3, stride, hidden, hw))
            hw = (hw + stride - 1) // stride
            layers.append((f"b{bi}.{i}.project", hidden, cout, 1, 1, 1, hw))
            cin = cout
    layers.append(("head", cin, channels(1280, width) if width > 1 else 1280, 1, 1, 1, hw))
    return layers
