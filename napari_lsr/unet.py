"""The segmentation network: a U-Net (Ronneberger et al. 2015) giving one cancer logit per pixel."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """depth: number of 2x downsamplings; width: channels of the first level (doubling down).

    ``norm_groups`` is kept for checkpoint compatibility; normalisation is per pixel.
    """

    depth: int = 3
    width: int = 16
    in_channels: int = 3
    norm_groups: int = 8

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


def _norm(ch: int, groups: int = 0) -> nn.Module:
    return ChannelNorm(ch)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            _norm(cout, groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _norm(cout, groups),
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
        self.inc = _DoubleConv(c.in_channels, chans[0], c.norm_groups)
        self.down = nn.ModuleList(
            _DoubleConv(chans[i], chans[i + 1], c.norm_groups) for i in range(c.depth)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
            for i in reversed(range(c.depth))
        )
        self.dec = nn.ModuleList(
            _DoubleConv(chans[i] * 2, chans[i], c.norm_groups) for i in reversed(range(c.depth))
        )
        self.head = nn.Conv2d(chans[0], 1, 1)
        # Start near "no cancer" (p ~ 0.12): most blocks in a slide hold little cancer.
        nn.init.constant_(self.head.bias, -2.0)

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
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        x = (x - 0.5) / 0.25
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, dec in zip(self.up, self.dec):
            y = up(y)
            y = dec(torch.cat([skips.pop(), y], dim=1))
        return self.head(y)[:, 0, :h, :w]


def build_model(config: UNetConfig | dict[str, Any] | None = None) -> UNet:
    """A U-Net from a config or its dict form (as stored in checkpoints)."""
    if isinstance(config, dict):
        config = UNetConfig(**config)
    return UNet(config)
