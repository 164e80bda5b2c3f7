"""The U-Net and its inference-only form: same outputs, any size, either memory layout."""

from __future__ import annotations

import pytest
import torch

from napari_lsr.unet import InferenceUNet, UNetConfig, build_model, inference_form


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
    with torch.inference_mode():
        ref = model(x)
        got = fast(x)
    assert got.shape == ref.shape == (2, *size)
    assert ref.std() > 0.1  # the logits vary, so equality says something
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert not torch.equal(x, torch.zeros_like(x))  # the input is not modified in place


def test_inference_form_keeps_geometry_and_has_no_gradients():
    model = _randomised(3, 4, seed=1)
    fast = inference_form(model)
    assert isinstance(fast, InferenceUNet)
    assert (fast.multiple, fast.receptive_radius) == (model.multiple, model.receptive_radius)
    assert all(not p.requires_grad for p in fast.parameters())
    # its weights are copies: training the model further does not change the inference form
    with torch.no_grad():
        model.head.bias.add_(1.0)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x) + 1.0, model(x), rtol=1e-4, atol=1e-4)


def test_inference_form_rejects_other_modules():
    with pytest.raises(TypeError, match="expected a UNet"):
        inference_form(torch.nn.Conv2d(3, 1, 1))
