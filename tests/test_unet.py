"""The U-Net and its inference-only form: same outputs, any size, either memory layout."""

from __future__ import annotations

import pytest
import torch

from napari_lsr.learn.unet import InferenceUNet, UNetConfig, build_model, inference_form

from conftest import f32_tolerance

# float32 results against a float64 reference: within this many float32 epsilons of the
# largest logit (the worst seen on x86 with and without vectorised kernels, 1 or 2 threads,
# is about 21; a wrong crop or a missing term is off by far more)
ULPS = 256


def _randomised(depth: int, width: int, seed: int, offset: float = 0.0):
    """A U-Net whose norms have non-trivial scales and shifts (a fresh one has 1 and 0);
    ``offset`` adds a common value to every conv weight, so that conv outputs share a large
    mean over channels (what the folded mean subtraction must cancel)."""
    torch.manual_seed(seed)
    model = build_model(UNetConfig(depth=depth, width=width))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "head" not in name and "up" not in name:
                p.copy_(torch.randn_like(p) * (0.5 if name.endswith("bias") else 1.0))
            elif p.ndim == 4 and offset:
                p.add_(offset / p[0].numel() ** 0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("depth", "width", "size", "offset"),
    [(1, 4, (37, 50), 0.0), (2, 8, (64, 64), 0.0), (3, 8, (45, 61), 0.0), (3, 4, (48, 40), 3.0)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_form_equals_the_model(depth, width, size, offset, channels_last):
    model = _randomised(depth, width, seed=depth * 10 + width, offset=offset)
    fast = inference_form(model)
    x = torch.rand(2, 3, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.inference_mode():
        # the reference in float64: with a large common mean (offset) the float32 UNet is
        # the less accurate of the two
        ref = model.double()(x.double())
        got = fast(x)
    assert got.shape == ref.shape == (2, *size)
    assert ref.std() > 0.1  # the logits vary, so equality says something
    tol = f32_tolerance(ref, ULPS)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=tol)
    assert torch.equal(x, before)  # the input is not modified in place


def test_inference_form_keeps_geometry_and_has_no_gradients():
    model = _randomised(3, 4, seed=1)
    fast = inference_form(model)
    assert isinstance(fast, InferenceUNet)
    assert (fast.multiple, fast.receptive_radius) == (model.multiple, model.receptive_radius)
    assert all(not p.requires_grad for p in fast.parameters())
    # its weights are copies: training the model further does not change the inference form
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        before = fast(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0).add_(0.5)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), before, rtol=0, atol=0)


def test_inference_form_rejects_other_modules():
    with pytest.raises(TypeError, match="expected a UNet"):
        inference_form(torch.nn.Conv2d(3, 1, 1))


@pytest.mark.parametrize(("depth", "width"), [(1, 4), (2, 4), (3, 8), (4, 4), (5, 4)])
def test_centre_equals_the_cropped_forward(depth, width):
    model = _randomised(depth, width, seed=depth)
    fast = inference_form(model)
    ctx, mult = fast.context, fast.multiple
    assert ctx % mult == 0 and ctx <= model.receptive_radius + mult
    cases = [
        (ctx, (mult, 3 * mult)),
        (ctx + mult, (5 * mult, 2 * mult)),
        (ctx + 3 * mult, (2 * mult, mult)),
    ]
    model = model.double()  # the reference in float64, the inference form in float32
    for margin, (h, w) in cases:
        x = torch.rand(2, 3, h + 2 * margin, w + 2 * margin)
        with torch.inference_mode():
            ref = model(x.double())[:, margin : margin + h, margin : margin + w]
            got = fast.centre(x, margin)
        assert got.shape == (2, h, w) and got.dtype == torch.float32
        tol = f32_tolerance(ref, ULPS)
        assert ref.std() > 100 * tol  # the logits vary far more than the tolerance
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=tol)


def test_centre_needs_the_context():
    fast = inference_form(_randomised(3, 4, seed=2))
    ctx, mult = fast.context, fast.multiple
    # the context is the network's reach: one pooling cell less and an input pixel the
    # centre depends on would be missing
    assert ctx - mult < 46 <= ctx  # depth 3: 46 px, rounded up to 48
    for margin in (ctx - mult, ctx + 1):
        with pytest.raises(ValueError, match="margin must be a multiple"):
            fast.centre(torch.rand(1, 3, 2 * margin + 16, 2 * margin + 16), margin)
    with pytest.raises(ValueError, match="centre must be a multiple"):
        fast.centre(torch.rand(1, 3, 2 * ctx + 12, 2 * ctx + 16), ctx)


@pytest.mark.parametrize(("dy", "dx"), [(0, -1), (0, 1), (-1, 0), (1, 0)])
def test_reach_of_the_network_is_46_px_at_depth_3(dy, dx):
    """A tile's first (or last) centre pixel changes with an input pixel 46 px beyond it on
    each side, never with one 47 px away: the 48 px context holds the network's reach.

    In float64: the change 46 px away is small (about 1e-8 here), under float32's resolution
    of a logit near 2 on some CPUs; the change 47 px away is exactly 0 with im2col convolutions,
    and within a few float64 epsilons with any convolution algorithm."""
    model = _randomised(3, 4, seed=3).double()
    x = torch.rand(1, 3, 176, 176, dtype=torch.float64)
    # a centre pixel on the near edge of an 8 px pooling cell for leftward/upward reach,
    # on the far edge for rightward/downward reach (the reach is not symmetric in a cell)
    py = 64 if dy <= 0 else 111
    px = 64 if dx <= 0 else 111
    with torch.inference_mode():
        ref = model(x)[0, py, px]
        # float64 rounding of the logit, with room for a convolution algorithm that mixes
        # nearby pixels (Winograd); 1e5 times under the smallest change within reach
        tol = 64 * torch.finfo(torch.float64).eps * max(1.0, abs(ref.item()))
        for dist, changes in ((46, True), (47, False)):
            y = x.clone()
            y[0, :, py + dy * dist, px + dx * dist] += 1.0
            change = (model(y)[0, py, px] - ref).abs().item()
            assert (change > tol) is changes, (dist, change, tol)
