"""TVConv: translation-variant depthwise convolution (Chen et al., CVPR 2022, arXiv 2203.10489).

``TVConv`` is the training form: learnable affinity maps A (c_A, h, w) pass through a
weight-generating block B (conv3x3 -> norm -> ReLU blocks, then conv3x3 to k*k*c channels) that
yields one depthwise kernel per output pixel, W (c, k, k, h, w), shared by every image:

    O[n, c, y, x] = sum_{i,j} W[c, i, j, y, x] * I_pad[n, c, s*y + i, s*x + j]  (+ bias[c, y, x])

with zero padding (k - 1) / 2 and stride s. ``TVConvDeploy`` is the cached inference form: W (and
the optional bias) evaluated once, A and B dropped. Unlike the official code, the cached form keeps
the bias branch and supports any odd kernel size.

Both forms call ``translation_variant_conv``, the one core op; ``tvconv.kernels`` picks its
implementation per device (C++ kernels on CPU, Triton kernels on CUDA, the eager tap loop
elsewhere).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tvconv import affinity, kernels

NORMS = ("ln", "bn", "in", "none")


@dataclass(frozen=True)
class TVConvOptions:
    """What a TVConv layer is besides its shape: the affinity maps (``affinity_channels``, their
    ``init``), the weight-generating block (``inter_channels`` wide, ``inter_layers`` deep, its
    ``norm``; ``generator=False`` learns the per-pixel kernels directly) and the optional
    per-position ``bias``. Declared once: the layer takes these keywords, the model configs
    inherit the fields through ``tvconv.config.ModelChoice`` (flat keys
    ``model.inter_channels``, ...), the registry and the profile CLI read their names here."""

    affinity_channels: int = 4
    inter_channels: int = 64
    inter_layers: int = 3
    norm: str = "ln"
    bias: bool = False
    init: str = "ones"
    generator: bool = True

    def __post_init__(self) -> None:
        self.check_options()

    def check_options(self, prefix: str = "") -> None:
        """Raise ValueError naming ``<prefix><field>`` and what it must be."""
        for name, minimum in (("affinity_channels", 1), ("inter_channels", 1), ("inter_layers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(
                    f"{prefix}{name}={value!r} is invalid: expected an int >= {minimum}"
                )
        for name in ("bias", "generator"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"{prefix}{name}={getattr(self, name)!r} is invalid: expected True or False"
                )
        if self.norm not in NORMS:
            raise ValueError(
                f"{prefix}norm={self.norm!r} is invalid: expected one of {', '.join(NORMS)}"
            )
        if self.init not in affinity.list_initialisers():
            raise ValueError(
                f"{prefix}init={self.init!r} is invalid: expected one of "
                + ", ".join(affinity.list_initialisers())
            )
        if not self.generator and self.init != "ones":
            raise ValueError(
                f"{prefix}init={self.init!r} does nothing with {prefix}generator=False (the"
                " kernels are learned directly: there are no affinity maps to initialise);"
                f" expected {prefix}init='ones' (the default) or {prefix}generator=True"
            )

    def options(self) -> dict:
        """The fields as the layer's keyword arguments."""
        return {name: getattr(self, name) for name in OPTION_NAMES}


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TVConvOptions))
# The options a layer without a weight generator (``generator=False``) never reads.
GENERATOR_ONLY_FIELDS = ("affinity_channels", "inter_channels", "inter_layers", "norm", "init")


def output_size(input_size: int, kernel_size: int, stride: int) -> int:
    """Output length of a 'same'-padded (padding (k - 1) / 2) convolution along one axis."""
    padding = (kernel_size - 1) // 2
    return (input_size + 2 * padding - kernel_size) // stride + 1


def _tap(x_pad: torch.Tensor, i: int, j: int, stride: int, out_h: int, out_w: int) -> torch.Tensor:
    """The strided view of the padded input that tap (i, j) multiplies: (N, C, out_h, out_w)."""
    return x_pad[
        :, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride
    ]


def _accumulate_taps(x_pad: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    _, kernel_size, _, out_h, out_w = weight.shape
    out = None
    for i in range(kernel_size):
        for j in range(kernel_size):
            tap = _tap(x_pad, i, j, stride, out_h, out_w)
            if out is None:
                out = tap * weight[:, i, j]
            else:
                out.addcmul_(tap, weight[:, i, j])
    return out


def reference_translation_variant_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """The same op with plain autograd through the tap loop: slower, kept as the reference that
    the fast paths are tested against."""
    padding = (weight.shape[1] - 1) // 2
    out = _accumulate_taps(F.pad(x, (padding,) * 4), weight, stride)
    return out if bias is None else out + bias


class _TranslationVariantConv(torch.autograd.Function):
    """Shift-and-accumulate with a hand-written backward: both gradients are accumulated tap by
    tap (input gradient into one zero-initialised padded buffer, weight gradient as one reduction
    per tap), so no k*k-times unfolded tensor and no per-tap zero-filled gradient is ever made
    (README.md, "Kernels", for what it saves)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        padding = (weight.shape[1] - 1) // 2
        x_pad = F.pad(x, (padding,) * 4)  # (N, C, H_in + 2p, W_in + 2p)
        out = _accumulate_taps(x_pad, weight, stride)
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(x_pad, weight)
        ctx.stride, ctx.padding, ctx.input_size = stride, padding, x.shape[-2:]
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x_pad, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        _, kernel_size, _, out_h, out_w = weight.shape
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_pad = torch.zeros_like(x_pad)
            for i in range(kernel_size):
                for j in range(kernel_size):
                    _tap(grad_pad, i, j, stride, out_h, out_w).addcmul_(grad_out, weight[:, i, j])
            height, width = ctx.input_size
            grad_x = grad_pad[:, :, padding : padding + height, padding : padding + width]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for i in range(kernel_size):
                for j in range(kernel_size):
                    tap = _tap(x_pad, i, j, stride, out_h, out_w)
                    torch.sum(grad_out * tap, dim=0, out=grad_weight[:, i, j])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=0)
        return grad_x, grad_weight, grad_bias, None


class _CppTranslationVariantConv(torch.autograd.Function):
    """The C++ kernels (``tvconv.kernels``): forward, input and weight gradients computed tap by
    tap in place, padding never materialised, channels-last outputs. Saves the input and the
    packed weights only, as a depthwise conv saves its input and weights. The forward reads an
    NCHW input in place; the backward takes channels-last copies of it and of ``grad_out``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        packed = kernels.packed_weight(weight)
        ctx.save_for_backward(x, packed)
        ctx.stride, ctx.has_bias = stride, bias is not None
        return kernels.cpu_extension().forward(x, packed, bias, stride)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        extension = kernels.cpu_extension()
        x, packed = ctx.saved_tensors
        # tiled transposes of NCHW tensors, once for both gradients
        x, grad_out = extension.channels_last(x), extension.channels_last(grad_out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = extension.input_grad(grad_out, packed, list(x.shape), ctx.stride)
        if ctx.needs_input_grad[1]:
            grad_weight = extension.weight_grad(grad_out, x, list(packed.shape), ctx.stride)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=0)
        return grad_x, grad_weight, grad_bias, None


class _TritonTranslationVariantConv(torch.autograd.Function):
    """The Triton kernels (``tvconv._triton``; CUDA): forward, input, weight and bias gradients,
    each one kernel reading its operands in place through their strides. The operands are brought
    to one dtype first (the widest, as the eager path's type promotion would; autocast may hand
    a bfloat16 input and float32 weights), and each gradient is returned in its operand's dtype.
    Saves the input and the weights only."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        dtype = x.dtype if bias is None else torch.promote_types(x.dtype, bias.dtype)
        dtype = torch.promote_types(dtype, weight.dtype)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.has_bias = stride, bias is not None
        return kernels.triton_kernels().forward(x, weight, bias, stride)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        triton_kernels = kernels.triton_kernels()
        x, weight = ctx.saved_tensors
        grad_out = grad_out.to(x.dtype)
        x_dtype, weight_dtype, bias_dtype = ctx.dtypes
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = triton_kernels.input_grad(grad_out, weight, x.shape, ctx.stride, like=x)
            grad_x = grad_x.to(x_dtype)
        wants_bias = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1] or wants_bias:
            grad_weight, grad_bias = triton_kernels.weight_and_bias_grad(
                grad_out, x, weight.shape, ctx.stride, ctx.needs_input_grad[1], wants_bias
            )
            grad_weight = None if grad_weight is None else grad_weight.to(weight_dtype)
            grad_bias = None if grad_bias is None else grad_bias.to(bias_dtype)
        return grad_x, grad_weight, grad_bias, None


def translation_variant_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """Depthwise convolution with a different kernel at every output pixel.

    x (N, C, H_in, W_in), weight (C, k, k, H, W), bias (C, H, W) or None -> (N, C, H, W).

    On CPU in float32/float64 the C++ kernels run, on CUDA the Triton kernels
    (``tvconv.kernels``, chosen by ``TVCONV_KERNEL``); elsewhere, or when they cannot be built, the
    eager path: shift-and-accumulate over the k*k taps, each tap multiplying a strided view of the
    padded input by its weight plane and adding into the output in place. Either way memory stays
    at one copy of the input plus the output, where an unfold would hold k*k copies, and the
    backward is hand-written (``_CppTranslationVariantConv``, ``_TritonTranslationVariantConv``,
    ``_TranslationVariantConv``).
    """
    _check_op_args(x, weight, bias, stride)
    choice = kernels.choose(x, weight, bias)
    if choice == "cpp":
        return _CppTranslationVariantConv.apply(x, weight, bias, stride)
    if choice == "triton":
        return _TritonTranslationVariantConv.apply(x, weight, bias, stride)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad:
        return _TranslationVariantConv.apply(x, weight, bias, stride)
    with torch.no_grad():
        return reference_translation_variant_conv(x, weight, bias, stride)


def _check_op_args(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> None:
    """The shapes every path needs (the Triton and eager paths would read out of bounds or
    return a wrong-sized output rather than fail). Raises ValueError."""
    if not _is_int(stride) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if x.dim() != 4 or weight.dim() != 5:
        raise ValueError(
            f"expected x (N, C, H_in, W_in) and weight (C, k, k, H, W), got x "
            f"{tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    channels, k, k_w, out_h, out_w = weight.shape
    if k != k_w or k % 2 == 0:
        raise ValueError(f"weight (C, k, k, H, W) needs a square odd k, got {tuple(weight.shape)}")
    expected = (output_size(x.shape[2], k, stride), output_size(x.shape[3], k, stride))
    if channels != x.shape[1] or (out_h, out_w) != expected:
        raise ValueError(
            f"weight {tuple(weight.shape)} does not fit x {tuple(x.shape)} at stride {stride}: "
            f"expected ({x.shape[1]}, {k}, {k}, {expected[0]}, {expected[1]})"
        )
    if bias is not None and tuple(bias.shape) != (channels, out_h, out_w):
        raise ValueError(
            f"bias must have shape (C, H, W) = {(channels, out_h, out_w)}, got {tuple(bias.shape)}"
        )


def _is_int(value: object) -> bool:
    """An int that is not a bool (``True == 1``, but ``channels=True`` is a mistake)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_layer_args(channels: int, h: int, w: int, kernel_size: int, stride: int) -> None:
    for name, value in (("channels", channels), ("h", h), ("w", w)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"TVConv {name} must be a positive int, got {value!r}")
    if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"TVConv kernel_size must be a positive odd int, got {kernel_size!r}")
    if not _is_int(stride) or stride not in (1, 2):
        raise ValueError(f"TVConv stride must be 1 or 2, got {stride!r}")


class _TranslationVariantLayer(nn.Module):
    """Shape bookkeeping and input checks shared by the training and the cached form."""

    def __init__(self, channels: int, h: int, w: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        _check_layer_args(channels, h, w, kernel_size, stride)
        self.channels = channels
        self.h = h
        self.w = w
        self.kernel_size = kernel_size
        self.stride = stride

    def _input_range(self, out: int) -> str:
        low, high = self.stride * (out - 1) + 1, self.stride * out
        return str(low) if low == high else f"{low}..{high}"

    def check_input(self, x: torch.Tensor) -> None:
        if (
            x.dim() != 4
            or x.shape[1] != self.channels
            or output_size(x.shape[2], self.kernel_size, self.stride) != self.h
            or output_size(x.shape[3], self.kernel_size, self.stride) != self.w
        ):
            expected = (
                f"(N, {self.channels}, {self._input_range(self.h)}, {self._input_range(self.w)})"
            )
            raise ValueError(
                f"{type(self).__name__}(channels={self.channels}, out={self.h}x{self.w}, "
                f"stride={self.stride}) expects input {expected}, got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, out={self.h}x{self.w}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )


def _norm_layer(norm: str, channels: int, h: int, w: int) -> nn.Module:
    if norm in ("bn", "in") and h * w == 1:  # the affinity maps are one sample of 1x1
        raise ValueError(
            f"TVConv norm={norm!r} normalises each channel over the layer's positions, and this "
            "layer's output is 1x1; use norm='ln' or 'none' here, or a larger input"
        )
    if norm == "ln":
        return nn.LayerNorm([channels, h, w])
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _generator(
    in_channels: int,
    inter_channels: int,
    inter_layers: int,
    out_channels: int,
    norm: str,
    h: int,
    w: int,
) -> nn.Sequential:
    """[conv3x3 -> norm -> ReLU] x (1 + inter_layers), then conv3x3 to out_channels; no biases."""
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(1 + inter_layers):
        layers += [
            nn.Conv2d(channels, inter_channels, 3, padding=1, bias=False),
            _norm_layer(norm, inter_channels, h, w),
            nn.ReLU(),
        ]
        channels = inter_channels
    layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=False))
    return nn.Sequential(*layers)


class TVConv(_TranslationVariantLayer):
    """Training form of TVConv; ``h, w`` are the layer's output size.

    ``generator=False`` is the control without the weight-generating block: W (c, k, k, h, w) is
    itself the learned parameter (a locally-connected depthwise conv), initialised i.i.d. with the
    distribution ``kaiming_normal_(mode="fan_out")`` gives the depthwise conv it replaces.
    """

    def __init__(
        self,
        channels: int,
        h: int,
        w: int,
        kernel_size: int = 3,
        stride: int = 1,
        affinity_channels: int = 4,
        inter_channels: int = 64,
        inter_layers: int = 3,
        norm: str = "ln",
        bias: bool = False,
        init: str = "ones",
        generator: bool = True,
    ) -> None:
        super().__init__(channels, h, w, kernel_size, stride)
        TVConvOptions(affinity_channels, inter_channels, inter_layers, norm, bias, init, generator)
        self.generator = generator
        self.has_bias = bias
        self.init = init
        taps = kernel_size * kernel_size
        if generator:
            self.affinity_maps = nn.Parameter(affinity.create(init, affinity_channels, h, w))
            self.weight_generator = _generator(
                affinity_channels, inter_channels, inter_layers, taps * channels, norm, h, w
            )
            self.bias_generator = (
                _generator(affinity_channels, inter_channels, inter_layers, channels, norm, h, w)
                if bias
                else None
            )
        else:
            self.weight = nn.Parameter(torch.empty(channels, kernel_size, kernel_size, h, w))
            self.bias = nn.Parameter(torch.zeros(channels, h, w)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) convs and unit/zero norms, as the official face models."""
        if not self.generator:
            fan_out = self.channels * self.kernel_size * self.kernel_size
            self.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.InstanceNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def set_affinity_maps(self, maps: torch.Tensor) -> None:
        """Overwrite the affinity maps (used by data-driven initialisers)."""
        if not self.generator:
            raise ValueError("TVConv(generator=False) has no affinity maps")
        if maps.shape != self.affinity_maps.shape:
            raise ValueError(
                f"affinity maps must have shape {tuple(self.affinity_maps.shape)}, "
                f"got {tuple(maps.shape)}"
            )
        self.affinity_maps.copy_(maps)

    def generate_weight(self) -> torch.Tensor:
        """Per-pixel kernels W of shape (C, k, k, h, w)."""
        if not self.generator:
            return self.weight
        k = self.kernel_size
        flat = self.weight_generator(self.affinity_maps.unsqueeze(0))  # (1, C*k*k, h, w)
        return flat.view(self.channels, k, k, self.h, self.w)

    def generate_bias(self) -> torch.Tensor | None:
        """Per-pixel bias (C, h, w), or None without the bias branch."""
        if not self.generator:
            return self.bias
        if self.bias_generator is None:
            return None
        return self.bias_generator(self.affinity_maps.unsqueeze(0)).squeeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return translation_variant_conv(
            x, self.generate_weight(), self.generate_bias(), self.stride
        )

    @torch.no_grad()
    def deploy(self) -> TVConvDeploy:
        """The cached form: W and the bias evaluated once (norms in eval mode), A and B dropped."""
        was_training = self.training
        self.eval()
        try:
            weight = self.generate_weight().detach().clone()
            bias = self.generate_bias()
            bias = None if bias is None else bias.detach().clone()
        finally:
            self.train(was_training)
        return TVConvDeploy.from_tensors(weight, bias, self.stride)

    def extra_repr(self) -> str:
        extra = f", init={self.init!r}" if self.generator else ", generator=False"
        return super().extra_repr() + extra + (", bias=True" if self.has_bias else "")


class TVConvDeploy(_TranslationVariantLayer):
    """Cached inference form: ``weight`` (C, k, k, H, W) and ``bias`` (C, H, W) or None."""

    def __init__(
        self,
        channels: int,
        h: int,
        w: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(channels, h, w, kernel_size, stride)
        # Stored in the C++ kernels' (H, k, k, W, C) memory layout, seen as (C, k, k, H, W):
        # the kernels then read it in place (no repacking per call); state dicts are unaffected.
        packed = torch.zeros(h, kernel_size, kernel_size, w, channels)
        self.weight = nn.Parameter(packed.permute(4, 1, 2, 0, 3))
        self.bias = nn.Parameter(torch.zeros(channels, h, w)) if bias else None

    @classmethod
    def from_tensors(
        cls, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
    ) -> TVConvDeploy:
        if weight.dim() != 5 or weight.shape[1] != weight.shape[2]:
            raise ValueError(f"weight must have shape (C, k, k, H, W), got {tuple(weight.shape)}")
        channels, kernel_size, _, h, w = weight.shape
        if bias is not None and bias.shape != (channels, h, w):
            raise ValueError(
                f"bias must have shape {(channels, h, w)} to match the weight, "
                f"got {tuple(bias.shape)}"
            )
        layer = cls(channels, h, w, kernel_size, stride, bias=bias is not None)
        layer.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return translation_variant_conv(x, self.weight, self.bias, self.stride)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", bias=True" if self.bias is not None else "")
