"""Slimmable building blocks and the two networks, plus the cut to one fixed width.

A slimmable layer holds the weights of width 1.0; at width w it uses the leading
max(1, round(c * w)) channels of each slimmed dimension. Batch norm is switchable: one
BatchNorm2d per width (Yu et al., Slimmable Neural Networks, ICLR 2019), so each width has
its own statistics and affine parameters.

`cut(width)` turns the slimmable network into a plain, static torch network for one width,
with each batch norm folded into the convolution before it (conv gets a bias), split into
the consecutive segments that are exported as separate ONNX files.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def ch(c, w):
    """Channel count of a slimmed dimension with c channels at width 1.0."""
    return max(1, int(round(c * w)))


def set_width(model, w):
    for m in model.modules():
        if hasattr(m, "width"):
            m.width = w


class SlimConv2d(nn.Conv2d):
    def __init__(self, cin, cout, k, stride=1, slim_in=True, slim_out=True):
        super().__init__(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.slim_in, self.slim_out = slim_in, slim_out
        self.width = 1.0
        self.q = None  # int8 weights when quantized (see quantize_int8_)
        self.a = None  # per-output-channel float32 scale of q

    def io(self, w=None):
        w = self.width if w is None else w
        i = ch(self.in_channels, w) if self.slim_in else self.in_channels
        o = ch(self.out_channels, w) if self.slim_out else self.out_channels
        return i, o

    def forward(self, x):
        i, o = self.io()
        return F.conv2d(x, self.weight[:o, :i], None, self.stride, self.padding)


class SlimLinear(nn.Linear):
    """Linear layer whose input features are slimmed; the outputs (classes) are not."""

    def __init__(self, fin, fout):
        super().__init__(fin, fout, bias=True)
        self.width = 1.0
        self.q = None
        self.a = None

    def forward(self, x):
        i = ch(self.in_features, self.width)
        return F.linear(x, self.weight[:, :i], self.bias)


class SwitchableBN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bns = nn.ModuleList([nn.BatchNorm2d(ch(c, w)) for w in WIDTHS])
        self.width = 1.0

    def bn(self, w=None):
        return self.bns[WIDTHS.index(self.width if w is None else w)]

    def forward(self, x):
        return self.bn()(x)


def quantize_int8_(model):
    """Make every conv/linear weight of width 1.0 exactly int8 x per-output-channel scale.

    Symmetric, per output channel: a = max|W| / 127, q = round(W / a). The float weights are
    replaced by q * a, so the network *is* the int8 one; every width uses leading slices of
    the same q, and only the per-channel scale changes when a batch norm is folded in.
    """
    for m in model.modules():
        if isinstance(m, (SlimConv2d, SlimLinear)):
            w = m.weight.data
            flat = w.reshape(w.shape[0], -1)
            a = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.float32)
            shape = (-1,) + (1,) * (w.dim() - 1)
            q = torch.round(w / a.view(shape)).clamp(-127, 127).to(torch.int8)
            m.q, m.a = q, a
            m.weight.data = q.to(torch.float32) * a.view(shape)


# ---------------------------------------------------------------- static (one width) modules


def fold(conv, sbn, w):
    """Static nn.Conv2d for width w with the width's batch norm folded in (eval statistics).

    If the slimmable conv is int8, the result carries `int8 = (q, scale)` with
    weight == q.float() * scale exactly (both float32), for the int8 ONNX storage.
    """
    i, o = conv.io(w)
    bn = sbn.bn(w)
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    out = nn.Conv2d(i, o, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        if conv.q is not None:
            q = conv.q[:o, :i].clone()
            scale = (conv.a[:o] * s).to(torch.float32)
            out.weight.copy_(q.to(torch.float32) * scale.view(-1, 1, 1, 1))
            out.int8 = (q, scale)
        else:
            out.weight.copy_(conv.weight[:o, :i] * s.view(-1, 1, 1, 1))
        out.bias.copy_(bn.bias - bn.running_mean * s)
    return out


def cut_linear(fc, w):
    i = ch(fc.in_features, w)
    out = nn.Linear(i, fc.out_features, bias=True)
    with torch.no_grad():
        if fc.q is not None:
            q = fc.q[:, :i].clone()
            out.weight.copy_(q.to(torch.float32) * fc.a.view(-1, 1))
            out.int8 = (q, fc.a.clone())
        else:
            out.weight.copy_(fc.weight[:, :i])
        out.bias.copy_(fc.bias)
    return out


class ConvReLU(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.relu(self.conv(x))


class Head(nn.Module):
    """Global average pool, flatten, linear: raw logits."""

    def __init__(self, fc):
        super().__init__()
        self.fc = fc

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class BasicBlock(nn.Module):
    def __init__(self, conv1, conv2, shortcut):
        super().__init__()
        self.conv1, self.conv2, self.shortcut = conv1, conv2, shortcut

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + sc)


class Segmented(nn.Sequential):
    """A static network: its children are the segments, run in order."""


# ---------------------------------------------------------------- the networks


class SlimDigitsNet(nn.Module):
    """conv3x3 1->16w, conv3x3 16w->32w /2, conv3x3 32w->64w /2 (BN+ReLU each), GAP, linear."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = SlimConv2d(1, 16, 3, slim_in=False)
        self.bn1 = SwitchableBN(16)
        self.conv2 = SlimConv2d(16, 32, 3, stride=2)
        self.bn2 = SwitchableBN(32)
        self.conv3 = SlimConv2d(32, 64, 3, stride=2)
        self.bn3 = SwitchableBN(64)
        self.fc = SlimLinear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def cut(self, w):
        seg0 = nn.Sequential(
            ConvReLU(fold(self.conv1, self.bn1, w)), ConvReLU(fold(self.conv2, self.bn2, w))
        )
        seg1 = nn.Sequential(ConvReLU(fold(self.conv3, self.bn3, w)), Head(cut_linear(self.fc, w)))
        return Segmented(seg0, seg1).eval()


class SlimBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = SlimConv2d(cin, cout, 3, stride=stride)
        self.bn1 = SwitchableBN(cout)
        self.conv2 = SlimConv2d(cout, cout, 3)
        self.bn2 = SwitchableBN(cout)
        self.has_sc = stride != 1 or cin != cout
        if self.has_sc:
            self.sc_conv = SlimConv2d(cin, cout, 1, stride=stride)
            self.sc_bn = SwitchableBN(cout)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        sc = self.sc_bn(self.sc_conv(x)) if self.has_sc else x
        return F.relu(y + sc)

    def cut(self, w):
        sc = fold(self.sc_conv, self.sc_bn, w) if self.has_sc else None
        return BasicBlock(fold(self.conv1, self.bn1, w), fold(self.conv2, self.bn2, w), sc)


class SlimResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem (no max-pool), BasicBlock stages [2, 2, 2, 2] with
    64-128-256-512 channels x width, strides 1-2-2-2, global average pool, linear."""

    STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))

    def __init__(self, classes=100, blocks=(2, 2, 2, 2)):
        super().__init__()
        self.stem = SlimConv2d(3, 64, 3, slim_in=False)
        self.stem_bn = SwitchableBN(64)
        stages, cin = [], 64
        for (cout, stride), n in zip(self.STAGES, blocks):
            stage = [SlimBasicBlock(cin, cout, stride)]
            stage += [SlimBasicBlock(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.ModuleList(stage))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.fc = SlimLinear(512, classes)
        for m in self.modules():
            if isinstance(m, SlimConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def cut(self, w):
        """Segments: stem+stage1 | stage2 | stage3 | stage4+head."""
        s = [[b.cut(w) for b in stage] for stage in self.stages]
        seg0 = nn.Sequential(ConvReLU(fold(self.stem, self.stem_bn, w)), *s[0])
        seg3 = nn.Sequential(*s[3], Head(cut_linear(self.fc, w)))
        return Segmented(seg0, nn.Sequential(*s[1]), nn.Sequential(*s[2]), seg3).eval()


@torch.no_grad()
def calibrate_bn(model, x, batch=128):
    """Per-width batch-norm statistics: exact (cumulative) mean/var over x for every width."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for w in WIDTHS:
        set_width(model, w)
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    model.eval()
    set_width(model, 1.0)
