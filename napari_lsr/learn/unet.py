"""The segmentation network: a U-Net (Ronneberger et al. 2015) giving one cancer logit per pixel."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import NORMS


@dataclass(frozen=True)
class UNetConfig:
    """depth: number of 2x downsamplings; width: channels of the first level (doubling down).

    ``norm``: the normalisation after each conv (see :data:`NORMS`); checkpoints written before
    the choice existed hold no ``norm`` and load as ``"channel"``. ``norm_groups``: the groups
    of ``"group"`` normalisation.
    """

    depth: int = 3
    width: int = 16
    in_channels: int = 3
    norm_groups: int = 8
    norm: str = "channel"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose from {', '.join(NORMS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChannelNorm(nn.Module):
    """Normalise each pixel's feature vector over channels (LayerNorm over C, as in ConvNeXt).

    Unlike BatchNorm, a block's output never depends on the other blocks of the batch, which
    matters when a batch is 2 groups of 15 blocks from 2 bins (batch statistics would leak one
    bin's statistics into the other's). Unlike GroupNorm or InstanceNorm, it uses no spatial
    statistics, so the network is translation-equivariant and a large tile gives the same
    values as the training-size blocks it is made of: tiled inference is seamless.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused layer_norm over the channels of an NHWC view: 2x faster than the same
        # arithmetic written as mean/sub/pow/mul over NCHW (benchmarks/speed.py), same values.
        c = x.shape[1]
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _norm(ch: int, kind: str, groups: int) -> nn.Module:
    """The normalisation after each conv (one of ``config.NORMS``). ``batch``: BatchNorm
    (batch statistics in training, the running ones at inference, so tiles are seamless);
    ``channel``: per-pixel ChannelNorm; ``group``: GroupNorm (spatial statistics: a tile's
    values depend on the tile, so tiled inference shows seams; kept for the ablation)."""
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(math.gcd(groups, ch), ch)
    return ChannelNorm(ch)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, kind: str, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            _norm(cout, kind, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _norm(cout, kind, groups),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with ``depth`` levels of pooling; takes RGB in [0, 1], returns (B, H, W) logits.

    Any input size works: the input is reflect-padded to a multiple of 2**depth and the
    output cropped back.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        c = self.config
        if c.depth < 1 or c.width < 1:
            raise ValueError("U-Net depth and width must be positive")
        chans = [c.width * 2**i for i in range(c.depth + 1)]
        n, g = c.norm, c.norm_groups
        self.inc = _DoubleConv(c.in_channels, chans[0], n, g)
        self.down = nn.ModuleList(_DoubleConv(chans[i], chans[i + 1], n, g) for i in range(c.depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
            for i in reversed(range(c.depth))
        )
        self.dec = nn.ModuleList(
            _DoubleConv(chans[i] * 2, chans[i], n, g) for i in reversed(range(c.depth))
        )
        self.head = nn.Conv2d(chans[0], 1, 1)
        # Start near "no cancer" (p ~ 0.12); training starts it at the prior's mean instead
        # (set_output_prior).
        nn.init.constant_(self.head.bias, -2.0)

    def set_output_prior(self, p: float) -> None:
        """Start the output at probability ``p`` everywhere: the head's bias at logit(p)."""
        p = min(max(float(p), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.head.bias.fill_(math.log(p / (1 - p)))

    @property
    def multiple(self) -> int:
        """Input offsets that keep the pooling grid aligned (tiles start on multiples of it)."""
        return 2**self.config.depth

    @property
    def receptive_radius(self) -> int:
        """Pixels of context on each side that influence an output pixel (an upper bound)."""
        r, scale = 0, 1
        for _ in range(self.config.depth):
            r += 2 * scale  # two 3x3 convs at this scale
            scale *= 2
        r += 2 * scale  # bottleneck
        for _ in range(self.config.depth):
            scale //= 2
            r += scale + 2 * scale  # transposed conv + two 3x3 convs
        return r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple)
        x = (x - 0.5) / 0.25
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = up(y)
            y = dec(torch.cat([skips.pop(), y], dim=1))
        return self.head(y)[:, 0, :h, :w]


_NHWC = torch.channels_last


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Reflect-pad the bottom and right of (B, C, H, W) up to multiples of m."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def _centred(w: torch.Tensor) -> torch.Tensor:
    """Conv weights minus their mean over output channels, channels-last.

    A bias-free convolution followed by "minus the mean over channels" is the convolution with
    these weights: the first half of a ChannelNorm folded into the conv before it.
    """
    w64 = w.detach().double()
    return (w64 - w64.mean(0, keepdim=True)).to(w.dtype).contiguous(memory_format=_NHWC)


def _scale_shift_relu_(d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """ReLU(ChannelNorm(d)) in place, for d whose mean over channels is already 0."""
    v = d.permute(0, 2, 3, 1)  # a view; contiguous when d is channels-last
    ms = torch.linalg.vector_norm(v, dim=-1, keepdim=True).square_().div_(v.shape[-1])
    v.mul_(ms.add_(eps).rsqrt_())
    torch.addcmul(bias, v, weight, out=v)  # one pass for the affine
    return d.relu_()


def _folded_bn(w: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free conv followed by an eval-mode BatchNorm, as one conv with a bias."""
    w64 = w.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.double() * scale
    folded = (w64 * scale[:, None, None, None]).to(w.dtype).contiguous(memory_format=_NHWC)
    return folded, shift.to(w.dtype)


class _InferenceDoubleConv(nn.Module):
    def __init__(self, block: _DoubleConv, split: tuple[int, ...] = ()) -> None:
        super().__init__()
        conv1, norm1, _, conv2, norm2, _ = block
        self.folded = isinstance(norm1, nn.BatchNorm2d)
        if self.folded:  # BatchNorm at inference is an affine map: folded into the convs
            w1, b1 = _folded_bn(conv1.weight, norm1)
            w2, b2 = _folded_bn(conv2.weight, norm2)
            edges = (0, *split, w1.shape[1])
            self.w1 = nn.ParameterList(
                nn.Parameter(w1[:, a:b].contiguous(memory_format=_NHWC), requires_grad=False)
                for a, b in zip(edges[:-1], edges[1:])
            )
            self.w2 = nn.Parameter(w2, requires_grad=False)
            self.n1 = nn.ParameterList([nn.Parameter(b1, requires_grad=False)])
            self.n2 = nn.ParameterList([nn.Parameter(b2, requires_grad=False)])
            return
        w1 = _centred(conv1.weight)
        edges = (0, *split, w1.shape[1])
        self.w1 = nn.ParameterList(
            nn.Parameter(w1[:, a:b].contiguous(memory_format=_NHWC), requires_grad=False)
            for a, b in zip(edges[:-1], edges[1:])
        )
        self.w2 = nn.Parameter(_centred(conv2.weight), requires_grad=False)
        self.n1 = nn.ParameterList(
            nn.Parameter(p.detach().clone(), requires_grad=False) for p in norm1.parameters()
        )
        self.n2 = nn.ParameterList(
            nn.Parameter(p.detach().clone(), requires_grad=False) for p in norm2.parameters()
        )
        self.eps1, self.eps2 = norm1.eps, norm2.eps

    def forward(self, *xs: torch.Tensor, padding: int = 1) -> torch.Tensor:
        # conv(cat([a, b])) == conv(a, W[:, :ca]) + conv(b, W[:, ca:]): no concatenated copy
        if self.folded:
            y = F.conv2d(xs[0], self.w1[0], self.n1[0], padding=padding)
            for x, w in zip(xs[1:], self.w1[1:]):
                y.add_(F.conv2d(x, w, padding=padding))
            y = F.conv2d(y.relu_(), self.w2, self.n2[0], padding=padding)
            return y.relu_()
        y = F.conv2d(xs[0], self.w1[0], padding=padding)
        for x, w in zip(xs[1:], self.w1[1:]):
            y.add_(F.conv2d(x, w, padding=padding))
        y = _scale_shift_relu_(y, self.n1[0], self.n1[1], self.eps1)
        y = F.conv2d(y, self.w2, padding=padding)
        return _scale_shift_relu_(y, self.n2[0], self.n2[1], self.eps2)


def _valid_plan(depth: int, n: int) -> tuple[list, list, tuple[int, int]]:
    """Crops for computing only what the output needs ("valid" convolutions), along one axis.

    For an input of n px whose first pixel lies on the pooling grid: for each pooling, the
    (start, size) crop that keeps it on its grid with an even size; for each decoder level,
    (skip start, upsampled start, size) of the overlap of its two inputs; and (start, size) of
    the output in input pixels. Each valid 3x3 conv eats 1 px per side.
    """
    o, s = 2, n - 4  # the input double conv
    skips = [(o, s)]
    pools = []
    for _ in range(depth):
        a = o % 2
        size = (s - a) - (s - a) % 2
        pools.append((a, size))
        o, s = (o + a) // 2 + 2, size // 2 - 4
        skips.append((o, s))
    o, s = skips.pop()
    decs = []
    for _ in range(depth):
        o, s = 2 * o, 2 * s  # the 2x2 stride-2 transposed conv: no context
        so, ss = skips.pop()
        start, end = max(o, so), min(o + s, so + ss)
        decs.append((start - so, start - o, end - start))
        o, s = start + 2, end - start - 4
    return pools, decs, (o, s)


def _context(depth: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that, as a margin on every side, holds all the
    input a tile's centre depends on (see ``_valid_plan``)."""
    m = multiple
    while True:
        fits = True
        for k in (1, 2, 3):
            n = 2 * m + k * multiple
            _, _, (o, s) = _valid_plan(depth, n)
            fits &= o <= m and o + s >= n - m
        if fits:
            return m
        m += multiple


class InferenceUNet(nn.Module):
    """A trained UNet rewritten for inference: the same function with fewer passes over memory.

    What a straight forward pass spends outside the convolutions (on a 2-core CPU, a third of
    its time: ``benchmarks/speed.py``) is mostly memory traffic, so this form removes it:

    - each ChannelNorm's mean subtraction is folded into the bias-free conv before it;
    - the rest of the norm (scale by 1/rms, the affine) and the ReLU run in place on an NHWC
      view, with one fused reduction for the rms;
    - the decoder's ``conv(cat([skip, up]))`` is the sum of two convolutions, so the
      concatenated copy is never made;
    - activations stay channels-last, the layout oneDNN's convolutions prefer.

    No gradients, same outputs as the UNet it came from to float rounding (tested).
    """

    def __init__(self, model: UNet) -> None:
        super().__init__()
        self.config = model.config
        self.multiple = model.multiple
        self.receptive_radius = model.receptive_radius
        #: The smallest tile margin (a multiple of ``multiple``) that ``centre`` accepts: the
        #: network's true reach, rounded up (48 px at depth 3, where ``receptive_radius``, an
        #: upper bound that ignores where the pooling grid falls, gives 51 px and the default
        #: margin 56 px).
        self.context = _context(self.config.depth, self.multiple)
        self.inc = _InferenceDoubleConv(model.inc)
        self.down = nn.ModuleList(_InferenceDoubleConv(d) for d in model.down)
        self.dec = nn.ModuleList(
            _InferenceDoubleConv(d, split=(d[0].in_channels // 2,)) for d in model.dec
        )
        self.up = nn.ParameterList()
        for up in model.up:
            self.up.append(nn.Parameter(up.weight.detach().clone(), requires_grad=False))
            self.up.append(nn.Parameter(up.bias.detach().clone(), requires_grad=False))
        self.head_w = nn.Parameter(
            model.head.weight.detach().clone(memory_format=_NHWC), requires_grad=False
        )
        self.head_b = nn.Parameter(model.head.bias.detach().clone(), requires_grad=False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.multiple).contiguous(memory_format=_NHWC)
        x = (x - 0.5) / 0.25
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for i, dec in enumerate(self.dec):
            y = F.conv_transpose2d(y, self.up[2 * i], self.up[2 * i + 1], stride=2)
            y = dec(skips.pop(), y)
        return F.conv2d(y, self.head_w, self.head_b)[:, 0, :h, :w]

    def centre(self, x: torch.Tensor, margin: int) -> torch.Tensor:
        """Logits of the centre of tiles that carry ``margin`` px of context on every side.

        Equal to ``forward(x)[:, margin:-margin, margin:-margin]`` when the margin is at least
        ``context``, but each layer computes only the pixels the centre depends on (unpadded
        convolutions, crops that keep the pooling grid): about a quarter fewer operations
        for a 512 px tile. The tile's first pixel must lie on the pooling grid (a multiple of
        ``multiple`` in slide coordinates), as the tiles of ``inference.predict_slide`` do.
        """
        ctx = self.context
        if margin < ctx or margin % self.multiple:
            raise ValueError(
                f"the margin must be a multiple of {self.multiple} and at least {ctx}; got {margin}"
            )
        h, w = x.shape[-2] - 2 * margin, x.shape[-1] - 2 * margin
        if h < self.multiple or w < self.multiple or h % self.multiple or w % self.multiple:
            raise ValueError(f"the centre must be a multiple of {self.multiple} px; got {h}x{w}")
        c = margin - ctx  # context beyond the network's reach: never computed
        x = x[..., c : x.shape[-2] - c, c : x.shape[-1] - c].contiguous(memory_format=_NHWC)
        depth = self.config.depth
        ph, dh, (oh, _) = _valid_plan(depth, x.shape[-2])
        pw, dw, (ow, _) = _valid_plan(depth, x.shape[-1])
        x = (x - 0.5) / 0.25
        skips = [self.inc(x, padding=0)]
        for down, (ah, sh), (aw, sw) in zip(self.down, ph, pw):
            y = skips[-1][..., ah : ah + sh, aw : aw + sw]
            skips.append(down(F.max_pool2d(y, 2), padding=0))
        y = skips.pop()
        for i, (dec, (sh0, uh0, nh), (sw0, uw0, nw)) in enumerate(zip(self.dec, dh, dw)):
            y = F.conv_transpose2d(y, self.up[2 * i], self.up[2 * i + 1], stride=2)
            skip = skips.pop()[..., sh0 : sh0 + nh, sw0 : sw0 + nw]
            y = dec(skip, y[..., uh0 : uh0 + nh, uw0 : uw0 + nw], padding=0)
        y = y[..., ctx - oh : ctx - oh + h, ctx - ow : ctx - ow + w]
        return F.conv2d(y, self.head_w, self.head_b)[:, 0]


def inference_form(model: UNet) -> InferenceUNet:
    """The model's inference-only form (see InferenceUNet), on the model's device."""
    if not isinstance(model, UNet):
        raise TypeError(f"expected a UNet, got {type(model).__name__}")
    if not has_inference_form(model):
        raise ValueError(f"{model.config.norm} normalisation has no inference form")
    return InferenceUNet(model)


def has_inference_form(model: Any) -> bool:
    """Whether ``inference_form`` can rewrite this model (channel or batch norm)."""
    return isinstance(model, UNet) and model.config.norm in ("channel", "batch")


def build_model(config: UNetConfig | dict[str, Any] | None = None) -> UNet:
    """A U-Net from a config or its dict form (as stored in checkpoints)."""
    if isinstance(config, dict):  # checkpoints from before the norm choice: ChannelNorm
        config = UNetConfig(**{"norm": "channel", **config})
    return UNet(config)
