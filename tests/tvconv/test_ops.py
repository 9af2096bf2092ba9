"""TVConv operator: core op vs a per-pixel loop, training vs cached form, gradients, bad input."""

import itertools

import pytest
import torch
from torch import nn

from tvconv import TVConv, TVConvDeploy, deploy, translation_variant_conv
from tvconv.ops import output_size, reference_translation_variant_conv


def loop_reference(x, weight, bias, stride):
    """O[n, c, y, x] = sum_ij W[c, i, j, y, x] * I_pad[n, c, s*y + i, s*x + j] + b[c, y, x]."""
    n, channels, height, width = x.shape
    _, k, _, out_h, out_w = weight.shape
    pad = (k - 1) // 2
    out = torch.zeros(n, channels, out_h, out_w, dtype=x.dtype)
    for b, c, y, xx, i, j in itertools.product(
        range(n), range(channels), range(out_h), range(out_w), range(k), range(k)
    ):
        row, col = stride * y + i - pad, stride * xx + j - pad
        if 0 <= row < height and 0 <= col < width:
            out[b, c, y, xx] += weight[c, i, j, y, xx] * x[b, c, row, col]
    if bias is not None:
        out += bias
    return out


@pytest.mark.parametrize(
    ("kernel_size", "stride", "size", "with_bias"),
    [(3, 1, 5, False), (3, 2, 5, True), (3, 2, 6, False), (5, 1, 4, True), (5, 2, 7, False)],
)
def test_core_op_matches_per_pixel_loop(kernel_size, stride, size, with_bias):
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    out = output_size(size, kernel_size, stride)
    weight = torch.randn(3, kernel_size, kernel_size, out, out, dtype=torch.float64)
    bias = torch.randn(3, out, out, dtype=torch.float64) if with_bias else None
    expected = loop_reference(x, weight, bias, stride)
    torch.testing.assert_close(
        translation_variant_conv(x, weight, bias, stride), expected, rtol=0, atol=1e-12
    )


def test_constant_kernel_equals_depthwise_conv():
    """With the same kernel at every pixel, TVConv is exactly a depthwise conv."""
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=True)
    x = torch.randn(2, 4, 9, 9)
    weight = conv.weight[:, 0, :, :, None, None].expand(4, 3, 3, 5, 5)
    bias = conv.bias[:, None, None].expand(4, 5, 5)
    torch.testing.assert_close(translation_variant_conv(x, weight, bias, 2), conv(x))


def test_output_size_follows_same_padding():
    assert [output_size(s, 3, 2) for s in (23, 24, 25)] == [12, 12, 13]
    assert output_size(96, 5, 1) == 96


@pytest.mark.parametrize(
    ("kernel_size", "stride", "bias", "generator"),
    list(itertools.product((3, 5), (1, 2), (False, True), (True, False))),
)
def test_training_form_equals_cached_form(kernel_size, stride, bias, generator):
    layer = TVConv(
        6,
        7,
        7,
        kernel_size,
        stride,
        inter_channels=8,
        inter_layers=1,
        bias=bias,
        init="normal" if generator else "ones",  # without a generator there are no maps
        generator=generator,
    )
    if not generator and bias:
        nn.init.normal_(layer.bias)
    x = torch.randn(3, 6, 7 * stride, 7 * stride)
    cached = layer.deploy()
    assert isinstance(cached, TVConvDeploy)
    assert cached.weight.shape == (6, kernel_size, kernel_size, 7, 7)
    assert (cached.bias is None) == (not bias)
    if bias:
        assert cached.bias.shape == (6, 7, 7)
        assert cached.bias.abs().sum() > 0
    assert (cached.stride, cached.kernel_size) == (stride, kernel_size)
    with torch.no_grad():
        torch.testing.assert_close(cached(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["ln", "bn", "in", "none"])
def test_every_norm_deploys_equal_in_eval_mode(norm):
    layer = TVConv(4, 6, 6, inter_channels=8, inter_layers=2, norm=norm, init="uniform")
    layer(torch.randn(2, 4, 6, 6)).sum().backward()  # one training step's forward updates BN stats
    layer.eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(layer.deploy()(x), layer(x), rtol=1e-5, atol=1e-5)
    assert layer.training is False


def test_deploy_keeps_training_mode_and_uses_eval_norms():
    layer = TVConv(4, 6, 6, inter_channels=8, inter_layers=1, norm="bn")
    with torch.no_grad():
        layer(torch.randn(2, 4, 6, 6))
    layer.train()
    cached = layer.deploy()
    assert layer.training
    layer.eval()
    torch.testing.assert_close(cached.weight, layer.generate_weight().detach())


def test_generator_structure_and_default_arguments():
    layer = TVConv(16, 12, 12)
    convs = [m for m in layer.weight_generator if isinstance(m, nn.Conv2d)]
    norms = [m for m in layer.weight_generator if isinstance(m, nn.LayerNorm)]
    assert layer.affinity_maps.shape == (4, 12, 12)
    assert torch.equal(layer.affinity_maps, torch.ones(4, 12, 12))
    assert [(c.in_channels, c.out_channels) for c in convs] == [(4, 64)] + [(64, 64)] * 3 + [
        (64, 9 * 16)
    ]
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert [tuple(n.normalized_shape) for n in norms] == [(64, 12, 12)] * 4
    assert layer.bias_generator is None


def test_bias_branch_has_the_generator_shape_and_output_channels():
    layer = TVConv(5, 4, 4, inter_channels=8, inter_layers=2, bias=True)
    convs = [m for m in layer.bias_generator if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(4, 8), (8, 8), (8, 8), (8, 5)]
    assert layer.generate_bias().shape == (5, 4, 4)


def test_gradients_reach_affinity_maps_and_every_generator_parameter():
    layer = TVConv(3, 5, 5, inter_channels=8, inter_layers=2, bias=True, init="normal")
    layer(torch.randn(2, 3, 5, 5)).pow(2).sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
    assert {name.split(".")[0] for name, _ in layer.named_parameters()} == {
        "affinity_maps",
        "weight_generator",
        "bias_generator",
    }


def test_core_op_gradients_match_the_loop_reference():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: translation_variant_conv(a, b, c, 2), (x, weight, bias)
    )


@pytest.mark.parametrize(
    ("kernel_size", "stride", "size", "with_bias"),
    [(3, 1, 9, True), (3, 2, 9, False), (3, 2, 10, True), (5, 1, 7, False), (5, 2, 11, True)],
)
def test_hand_written_backward_equals_plain_autograd(kernel_size, stride, size, with_bias):
    out = output_size(size, kernel_size, stride)
    tensors = [torch.randn(3, 4, size, size), torch.randn(4, kernel_size, kernel_size, out, out)]
    tensors.append(torch.randn(4, out, out) if with_bias else None)
    grad_out = torch.randn(3, 4, out, out)
    results = []
    for op in (translation_variant_conv, reference_translation_variant_conv):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
        output = op(*leaves, stride)
        output.backward(grad_out)
        results.append([output, *(t.grad for t in leaves if t is not None)])
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


def test_no_graph_is_recorded_without_gradients():
    x, weight = torch.randn(2, 3, 5, 5), torch.randn(3, 3, 3, 5, 5)
    assert translation_variant_conv(x, weight).grad_fn is None
    with torch.no_grad():
        assert translation_variant_conv(x, weight.requires_grad_()).grad_fn is None


def test_generator_false_is_a_locally_connected_conv():
    layer = TVConv(8, 6, 6, generator=False)
    assert not hasattr(layer, "affinity_maps")
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer.weight.shape == (8, 3, 3, 6, 6)
    # initialised like kaiming_normal_(fan_out) on the depthwise conv it replaces: std sqrt(2/72)
    assert abs(layer.weight.std().item() - (2 / 72) ** 0.5) < 0.02
    assert layer.generate_weight() is layer.weight


def test_kaiming_fan_out_init_of_generator_convs():
    layer = TVConv(32, 8, 8, inter_channels=64, inter_layers=1)
    final = layer.weight_generator[-1]
    expected_std = (2 / (final.out_channels * 9)) ** 0.5
    assert abs(final.weight.std().item() / expected_std - 1) < 0.05


def test_set_affinity_maps_checks_shape():
    layer = TVConv(3, 4, 4, affinity_channels=2, inter_channels=4, inter_layers=0)
    layer.set_affinity_maps(torch.full((2, 4, 4), 0.5))
    assert torch.equal(layer.affinity_maps, torch.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4\)"):
        layer.set_affinity_maps(torch.zeros(4, 4, 4))


def test_wrong_input_shape_names_expected_and_received():
    layer = TVConv(16, 12, 12, stride=2, inter_channels=4, inter_layers=0)
    layer(torch.randn(1, 16, 24, 24))
    layer(torch.randn(1, 16, 23, 23))
    expected = r"expects input \(N, 16, 23\.\.24, 23\.\.24\), got \(1, 16, 48, 48\)"
    with pytest.raises(ValueError, match=expected):
        layer(torch.randn(1, 16, 48, 48))
    with pytest.raises(ValueError, match=r"got \(1, 8, 24, 24\)"):
        layer(torch.randn(1, 8, 24, 24))
    cached = layer.deploy()
    with pytest.raises(ValueError, match=r"TVConvDeploy\(channels=16, out=12x12, stride=2\)"):
        cached(torch.randn(16, 24, 24))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 4}, "kernel_size must be a positive odd int, got 4"),
        ({"stride": 3}, "stride must be 1 or 2, got 3"),
        ({"norm": "gn"}, "norm='gn' is invalid: expected one of ln, bn, in, none"),
        ({"init": "random"}, "init='random' is invalid: expected one of"),
        ({"inter_layers": -1}, "inter_layers=-1 is invalid: expected an int >= 0"),
        ({"affinity_channels": 0}, "affinity_channels=0 is invalid: expected an int >= 1"),
        (
            {"generator": False, "init": "stats"},
            "init='stats' does nothing with generator=False (the kernels are learned directly",
        ),
        ({"generator": False, "init": "zeros"}, "expected init='ones' (the default) or generator"),
        ({"channels": 0}, "channels must be a positive int, got 0"),
        ({"channels": True}, "channels must be a positive int, got True"),
        ({"stride": 2.0}, "stride must be 1 or 2, got 2.0"),
        ({"stride": True}, "stride must be 1 or 2, got True"),
        ({"bias": "yes"}, "bias='yes' is invalid: expected True or False"),
        ({"generator": "no"}, "generator='no' is invalid: expected True or False"),
        ({"h": 1, "w": 1, "norm": "bn"}, "norm='bn' normalises each channel over the layer's"),
        ({"h": 1, "w": 1, "norm": "in"}, "this layer's output is 1x1; use norm='ln'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {"channels": 4, "h": 5, "w": 5, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TVConv(**args)


def test_a_one_by_one_layer_trains_with_the_norms_that_can_normalise_it():
    for norm in ("ln", "none"):
        layer = TVConv(4, 1, 1, norm=norm)
        layer(torch.randn(2, 4, 1, 1)).sum().backward()


def test_deploy_on_a_bare_layer_and_on_a_container():
    layer = TVConv(4, 5, 5, inter_channels=4, inter_layers=0)
    assert isinstance(deploy(layer), TVConvDeploy)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), TVConv(4, 5, 5, inter_channels=4, inter_layers=0))
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        before = model(x)
        assert deploy(model) is model
        torch.testing.assert_close(model(x), before)
    assert isinstance(model[1], TVConvDeploy)


def test_from_tensors_validates_shapes():
    with pytest.raises(ValueError, match=r"weight must have shape \(C, k, k, H, W\)"):
        TVConvDeploy.from_tensors(torch.zeros(3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"bias must have shape \(3, 4, 4\)"):
        TVConvDeploy.from_tensors(torch.zeros(3, 3, 3, 4, 4), torch.zeros(3, 5, 5))


@pytest.mark.parametrize("kernel", ["eager", "cpp"])
@pytest.mark.parametrize(
    ("weight_shape", "bias_shape", "stride", "message"),
    [
        ((2, 3, 3, 8, 8), None, 1, r"expected \(3, 3, 3, 8, 8\)"),  # channels
        ((3, 3, 3, 7, 8), None, 1, r"expected \(3, 3, 3, 8, 8\)"),  # output height
        ((3, 3, 3, 8, 8), None, 2, r"at stride 2: expected \(3, 3, 3, 4, 4\)"),
        ((3, 4, 4, 8, 8), None, 1, "square odd k"),
        ((3, 3, 5, 8, 8), None, 1, "square odd k"),
        ((3, 3, 3, 8, 8), (3, 4, 4), 1, r"bias must have shape \(C, H, W\) = \(3, 8, 8\)"),
        ((3, 3, 3, 8, 8), None, 0, "stride must be a positive int"),
    ],
)
def test_core_op_refuses_shapes_that_do_not_fit_on_every_path(
    kernel, weight_shape, bias_shape, stride, message, monkeypatch
):
    """The shapes are checked before the kernel is chosen: the Triton and eager paths would
    read out of bounds or return a wrong-sized output instead of failing."""
    monkeypatch.setenv("TVCONV_KERNEL", kernel)
    bias = None if bias_shape is None else torch.randn(bias_shape)
    with pytest.raises(ValueError, match=message):
        translation_variant_conv(torch.randn(2, 3, 8, 8), torch.randn(weight_shape), bias, stride)
