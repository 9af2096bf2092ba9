"""The Triton kernels (``tvconv._triton``) against the reference, run on CPU tensors in Triton's
interpreter: forward and the input, weight and bias gradients, strides 1-3, odd k 1-7, NCHW and
channels-last, float32 / bfloat16 / float16, and the kernel choice."""

import itertools
import os
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"  # before tvconv._triton is imported (by the fixture)
pytest.importorskip("triton", reason="Triton is a dev dependency on Linux x86-64 only")

from tvconv import kernels
from tvconv.ops import (
    TVConv,
    output_size,
    reference_translation_variant_conv,
    translation_variant_conv,
)


@pytest.fixture
def triton_kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("TVCONV_KERNEL", "triton")
    kernels.triton_kernels.cache_clear()
    yield
    kernels.triton_kernels.cache_clear()


def _operands(shape, k, stride, with_bias, dtype, seed):
    n, c, h, w = shape
    oh, ow = output_size(h, k, stride), output_size(w, k, stride)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(c, k, k, oh, ow, generator=g)
    bias = torch.randn(c, oh, ow, generator=g) if with_bias else None
    grad = torch.randn(n, c, oh, ow, generator=g)
    return [t if t is None else t.to(dtype) for t in (x, weight, bias, grad)]


def _run(op, x, weight, bias, grad, stride, channels_last=False):
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    inputs = list(leaves)
    if channels_last:
        inputs[0] = inputs[0].contiguous(memory_format=torch.channels_last)
    out = op(inputs[0], inputs[1], inputs[2] if bias is not None else None, stride)
    out.backward(grad)
    return [out, *(t.grad for t in leaves)]


# (batch 3, 5 channels, odd sizes): partial pixel blocks and rows that do not divide the stride
CASES = list(itertools.product((1, 3, 5, 7), (1, 2, 3), (False, True)))


@pytest.mark.parametrize(("k", "stride", "with_bias"), CASES)
def test_forward_and_all_gradients_equal_the_reference(triton_kernel, k, stride, with_bias):
    operands = _operands((3, 5, 13, 11), k, stride, with_bias, torch.float32, k * 10 + stride)
    fast = _run(translation_variant_conv, *operands, stride)
    reference = _run(reference_translation_variant_conv, *operands, stride)
    for mine, theirs in zip(fast, reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_inputs_are_read_in_place_and_give_the_same_result(triton_kernel, stride):
    operands = _operands((2, 6, 12, 12), 3, stride, True, torch.float32, stride)
    plain = _run(translation_variant_conv, *operands, stride)
    strided = _run(translation_variant_conv, *operands, stride, channels_last=True)
    assert strided[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain, strided, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stride", [1, 2])
def test_half_precision_matches_the_float32_reference(triton_kernel, dtype, stride):
    half = _operands((2, 4, 10, 10), 3, stride, True, dtype, 7 + stride)
    wide = [t.float() for t in half]
    fast = _run(translation_variant_conv, *half, stride)
    reference = _run(reference_translation_variant_conv, *wide, stride)
    for mine, theirs in zip(fast, reference, strict=True):
        assert mine.dtype == dtype
        # float32 accumulation: only the inputs' and the final rounding's error remains
        scale = theirs.abs().max().item()
        torch.testing.assert_close(mine.float(), theirs, rtol=2e-2, atol=2e-2 * scale)


def test_mixed_dtypes_promote_and_return_each_gradient_in_its_own_dtype(triton_kernel):
    x, weight, bias, grad = _operands((2, 3, 8, 8), 3, 1, True, torch.float32, 3)
    x, grad = x.bfloat16(), grad.float()
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = translation_variant_conv(*leaves, 1)
    assert out.dtype == torch.float32  # promoted, as the eager path's arithmetic would
    out.backward(grad)
    assert [t.grad.dtype for t in leaves] == [torch.bfloat16, torch.float32, torch.float32]
    reference = reference_translation_variant_conv(x.float(), weight, bias, 1)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_empty_batch_gives_an_empty_output_and_zero_weight_and_bias_grads(triton_kernel):
    x, weight, bias, _ = _operands((1, 3, 6, 6), 3, 1, True, torch.float32, 0)
    x = x[:0].requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    out = translation_variant_conv(x, weight, bias, 1)
    assert out.shape == (0, 3, 6, 6)
    out.sum().backward()
    assert torch.equal(weight.grad, torch.zeros_like(weight))
    assert torch.equal(bias.grad, torch.zeros_like(bias))


def test_the_training_layer_trains_through_the_triton_kernels(triton_kernel):
    torch.manual_seed(0)
    layer = TVConv(4, 6, 6, kernel_size=3, inter_channels=8, inter_layers=1)
    x = torch.randn(2, 4, 6, 6)
    out = layer(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    with kernels.forced("eager"):
        torch.testing.assert_close(layer(x), out, rtol=1e-5, atol=1e-5)
        layer(x).square().mean().backward()
    for name, parameter in layer.named_parameters():
        torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-4, atol=1e-6)


def test_kernel_choice(monkeypatch):
    kernels.triton_kernels.cache_clear()
    monkeypatch.setenv("TVCONV_KERNEL", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TVCONV_KERNEL=triton needs CUDA"):
        kernels.choose(torch.ones(1))  # a CPU tensor, no interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.choose(torch.ones(1, dtype=torch.bfloat16)) == "triton"
    with pytest.raises(RuntimeError, match="TVCONV_KERNEL=triton needs CUDA"):
        kernels.choose(torch.ones(1, dtype=torch.float64))
    monkeypatch.setenv("TVCONV_KERNEL", "auto")  # never the interpreter unless asked by name
    assert kernels.choose(torch.ones(1, dtype=torch.bfloat16)) == "eager"


def _operand_on(device: str, dtype=torch.float32) -> SimpleNamespace:
    """What ``kernels.choose`` reads of a tensor (a CUDA one cannot be made without a GPU)."""
    return SimpleNamespace(device=SimpleNamespace(type=device), dtype=dtype)


def test_auto_picks_triton_on_cuda_and_the_cpp_kernel_on_cpu(monkeypatch):
    monkeypatch.setenv("TVCONV_KERNEL", "auto")
    monkeypatch.setattr(kernels, "triton_kernels", lambda: "loaded")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert kernels.choose(_operand_on("cuda", dtype)) == "triton"
    assert kernels.choose(_operand_on("cuda", torch.float64)) == "eager"
    assert kernels.choose(_operand_on("cuda"), _operand_on("cpu")) == "eager"
    monkeypatch.setattr(kernels, "triton_kernels", lambda: None)  # Triton missing
    assert kernels.choose(_operand_on("cuda")) == "eager"


def test_a_missing_triton_warns_once_or_fails_when_asked_for(monkeypatch):
    import tvconv

    monkeypatch.setitem(sys.modules, "triton", None)  # "import triton" raises ImportError
    monkeypatch.delitem(sys.modules, "tvconv._triton", raising=False)
    monkeypatch.delattr(tvconv, "_triton", raising=False)
    kernels.triton_kernels.cache_clear()
    try:
        monkeypatch.setenv("TVCONV_KERNEL", "auto")
        with pytest.warns(UserWarning, match="Triton kernels unavailable"):
            assert kernels.triton_kernels() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert kernels.triton_kernels() is None  # cached: no second warning
        kernels.triton_kernels.cache_clear()
        monkeypatch.setenv("TVCONV_KERNEL", "triton")
        with pytest.raises(RuntimeError, match="TVCONV_KERNEL=triton but Triton is unavailable"):
            kernels.triton_kernels()
    finally:
        kernels.triton_kernels.cache_clear()


@pytest.mark.parametrize("programs", [1, 12, 10_000])
def test_weight_grad_splits_the_batch_into_slices_and_adds_them(
    triton_kernel, monkeypatch, programs
):
    from tvconv import _triton

    # 2 channel blocks x 2 pixel blocks per slice: a budget of 1 program -> one slice of 7 images;
    # 12 -> slices of 3, 3 and 1 images; 10,000 -> 7 slices of one image
    monkeypatch.setattr(_triton, "BATCH_PROGRAMS", programs)
    x, weight, bias, grad = _operands((7, 20, 9, 9), 3, 1, True, torch.float32, programs)
    fast = _run(translation_variant_conv, x, weight, bias, grad, 1)
    reference = _run(reference_translation_variant_conv, x, weight, bias, grad, 1)
    for mine, theirs in zip(fast, reference, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_the_cached_forms_packed_weights_are_read_in_place(triton_kernel):
    torch.manual_seed(3)
    layer = TVConv(6, 5, 5, kernel_size=3, stride=2, inter_channels=8, inter_layers=1)
    deployed = layer.deploy()
    assert not deployed.weight.is_contiguous()  # stored as (H, k, k, W, C)
    x = torch.randn(2, 6, 10, 10)
    with torch.no_grad():
        fast = deployed(x)
        reference = reference_translation_variant_conv(x, deployed.weight.contiguous(), None, 2)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    x.requires_grad_()
    deployed(x).square().sum().backward()  # the input gradient through the strided weight too
    expected = x.detach().clone().requires_grad_()
    reference_translation_variant_conv(
        expected, deployed.weight.detach(), None, 2
    ).square().sum().backward()
    torch.testing.assert_close(x.grad, expected.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("triton_kernel")
@pytest.mark.parametrize(
    ("x_shape", "w_shape"), [((2, 0, 5, 5), (0, 3, 3, 5, 5)), ((2, 3, 0, 5), (3, 3, 3, 0, 5))]
)
def test_backward_of_an_empty_layer_is_empty_not_a_division_by_zero(x_shape, w_shape):
    x = torch.randn(x_shape, requires_grad=True)
    weight = torch.randn(w_shape, requires_grad=True)
    translation_variant_conv(x, weight).sum().backward()
    assert weight.grad.shape == w_shape and x.grad.shape == x_shape


def test_a_forced_triton_after_an_auto_choice_found_it_missing_says_so(monkeypatch):
    """``triton_kernels`` is cached: an auto choice that found Triton missing stored None, and a
    later TVCONV_KERNEL=triton then failed with AttributeError inside the op."""
    monkeypatch.setattr(kernels, "triton_kernels", lambda: None)
    monkeypatch.setenv("TVCONV_KERNEL", "triton")
    with pytest.raises(RuntimeError, match="TVCONV_KERNEL=triton but Triton is unavailable"):
        kernels.choose(torch.zeros(1, 1, 3, 3))
