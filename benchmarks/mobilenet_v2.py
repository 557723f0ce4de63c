"""The conv layer shapes of MobileNetV2 (Sandler et al. 2018, table 2) at a given input size."""
from __future__ import annotations

# (expansion t, output channels c, repeats n, first stride s)
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def conv_layers(size: int = 224, width: float = 1.0):
    """Every conv as (name, in_ch, out_ch, kernel, stride, groups, in_hw), in network order."""
    def ch(c):
        return max(8, int(c * width + 4) // 8 * 8)
    layers, hw = [], size
    cin = ch(32)
    layers.append(("stem", 3, cin, 3, 2, 1, hw))
    hw = (hw + 1) // 2
    for bi, (t, c, n, s) in enumerate(BLOCKS):
        cout = ch(c)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            if t != 1:
                layers.append((f"b{bi}.{i}.expand", cin, hidden, 1, 1, 1, hw))
            layers.append((f"b{bi}.{i}.dw", hidden, hidden, 3, stride, hidden, hw))
            hw = (hw + stride - 1) // stride
            layers.append((f"b{bi}.{i}.project", hidden, cout, 1, 1, 1, hw))
            cin = cout
    layers.append(("head", cin, ch(1280) if width > 1 else 1280, 1, 1, 1, hw))
    return layers
