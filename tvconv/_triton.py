"""Triton kernels for TVConv's core op on CUDA (``tvconv.kernels`` picks them; README, "Kernels").

The op (``tvconv.ops.translation_variant_conv``) and its gradients, each one kernel over tiles of
channels x pixels of one image, the k*k taps unrolled (one compiled kernel per k, stride and
dtype), padding never materialised and no unfolded copy of the input ever made:

- forward: ``O[n, c, p] = sum_t W[c, t, p] * X_t[n, c, p] (+ b[c, p])``, one program per
  (n, channel block, block of output pixels), the taps summed in registers;
- input gradient: each input pixel gathers the output pixels whose taps read it (for stride 2,
  only the taps of the right parity), one program per (n, channel block, block of input pixels):
  no atomics;
- weight and bias gradients: ``dW[c, t, p] = sum_n dO[n, c, p] * X_t[n, c, p]`` and
  ``db[c, p] = sum_n dO[n, c, p]``, one program per (slice of the batch, channel block, block of
  output pixels), float32 partial sums per slice added at the end (enough slices to fill the GPU
  when the layer is small and the batch large).

Tensors are read through their strides, so NCHW and channels-last inputs, and the cached form's
(H, k, k, W, C)-ordered weights, are all read in place.
Sums accumulate in float32 whatever the dtype (float32, bfloat16, float16), then are stored in the
operands' dtype. With ``TRITON_INTERPRET=1`` (set before this module is imported) the same kernels
run on CPU tensors in Triton's interpreter: how the tests check them against the reference without
a GPU (``tests/tvconv/test_triton.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# A program covers a tile of CHANNEL_BLOCK channels x PIXEL_BLOCK pixels of one image: 16
# consecutive elements along either axis, so both NCHW (pixels contiguous) and channels-last
# (channels contiguous) inputs are read in full memory segments.
CHANNEL_BLOCK = 16
PIXEL_BLOCK = 64
BATCH_PROGRAMS = 1024  # the weight gradient splits the batch until about this many programs run


@triton.jit
def _tile(channels, pixels, CHANNEL_BLOCK: tl.constexpr, PIXEL_BLOCK: tl.constexpr):
    """This program's channels (a column), pixels (a row) and which of the tile exist."""
    c = (tl.program_id(1) * CHANNEL_BLOCK + tl.arange(0, CHANNEL_BLOCK))[:, None]
    p = (tl.program_id(2) * PIXEL_BLOCK + tl.arange(0, PIXEL_BLOCK))[None, :]
    return c, p, (c < channels) & (p < pixels)


@triton.jit
def _tap_source(y, x, t, height_in, width_in, STRIDE: tl.constexpr, K: tl.constexpr):
    """The input pixel that tap ``t`` of output pixel (y, x) reads, and whether it lies inside
    the input (outside: the zero padding, never materialised)."""
    yi = STRIDE * y + t // K - (K - 1) // 2
    xi = STRIDE * x + t % K - (K - 1) // 2
    return yi, xi, (yi >= 0) & (yi < height_in) & (xi >= 0) & (xi < width_in)


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    channels, height_in, width_in, height, width,
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    swc, swi, swj, swh, sww,
    STRIDE: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr,
    CHANNEL_BLOCK: tl.constexpr, PIXEL_BLOCK: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    plane = height * width
    c, p, inside = _tile(channels, plane, CHANNEL_BLOCK, PIXEL_BLOCK)
    y, x = p // width, p % width
    total = tl.zeros((CHANNEL_BLOCK, PIXEL_BLOCK), dtype=tl.float32)
    for t in tl.static_range(K * K):
        yi, xi, exists = _tap_source(y, x, t, height_in, width_in, STRIDE, K)
        read = inside & exists
        values = tl.load(x_ptr + n * sxn + c * sxc + yi * sxh + xi * sxw, mask=read, other=0.0)
        # weight (channels, K, K, height, width) through its strides (the cached form stores it
        # as (height, K, K, width, channels))
        at = c * swc + (t // K) * swi + (t % K) * swj + y * swh + x * sww
        weights = tl.load(w_ptr + at, mask=inside, other=0.0)
        total += values.to(tl.float32) * weights.to(tl.float32)
    if HAS_BIAS:
        total += tl.load(b_ptr + c * plane + p, mask=inside, other=0.0).to(tl.float32)
    target = out_ptr + n * son + c * soc + y * soh + x * sow
    tl.store(target, total.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _input_grad_kernel(
    g_ptr, w_ptr, gx_ptr,
    channels, height_in, width_in, height, width,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    swc, swi, swj, swh, sww,
    STRIDE: tl.constexpr, K: tl.constexpr,
    CHANNEL_BLOCK: tl.constexpr, PIXEL_BLOCK: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    c, p, inside = _tile(channels, height_in * width_in, CHANNEL_BLOCK, PIXEL_BLOCK)
    yi, xi = p // width_in, p % width_in
    total = tl.zeros((CHANNEL_BLOCK, PIXEL_BLOCK), dtype=tl.float32)
    for t in tl.static_range(K * K):
        # output pixel (y, x) reads input (STRIDE*y + i - pad, STRIDE*x + j - pad) by tap (i, j)
        ny = yi + (K - 1) // 2 - t // K
        nx = xi + (K - 1) // 2 - t % K
        y, x = ny // STRIDE, nx // STRIDE
        hit = inside & (ny >= 0) & (nx >= 0) & (y < height) & (x < width)
        if STRIDE > 1:
            hit = hit & (ny % STRIDE == 0) & (nx % STRIDE == 0)
        grads = tl.load(g_ptr + n * sgn + c * sgc + y * sgh + x * sgw, mask=hit, other=0.0)
        at = c * swc + (t // K) * swi + (t % K) * swj + y * swh + x * sww
        weights = tl.load(w_ptr + at, mask=hit, other=0.0)
        total += grads.to(tl.float32) * weights.to(tl.float32)
    target = gx_ptr + n * sxn + c * sxc + yi * sxh + xi * sxw
    tl.store(target, total.to(gx_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _weight_grad_kernel(
    g_ptr, x_ptr, gw_ptr, gb_ptr,
    batch, images_per_program, channels, height_in, width_in, height, width,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    STRIDE: tl.constexpr, K: tl.constexpr, WEIGHT: tl.constexpr, BIAS: tl.constexpr,
    CHANNEL_BLOCK: tl.constexpr, PIXEL_BLOCK: tl.constexpr,
):  # fmt: skip
    """Partial sums over one slice of the batch: gw (slices, channels, K*K, h*w) and gb
    (slices, channels, h*w), float32; the caller adds the slices."""
    part = tl.program_id(0)
    plane = height * width
    c, p, inside = _tile(channels, plane, CHANNEL_BLOCK, PIXEL_BLOCK)
    y, x = p // width, p % width
    first = part * images_per_program
    last = tl.minimum(first + images_per_program, batch)
    if WEIGHT:
        for t in tl.static_range(K * K):
            yi, xi, exists = _tap_source(y, x, t, height_in, width_in, STRIDE, K)
            read = inside & exists
            total = tl.zeros((CHANNEL_BLOCK, PIXEL_BLOCK), dtype=tl.float32)
            for n in range(first, last):
                grads = tl.load(
                    g_ptr + n * sgn + c * sgc + y * sgh + x * sgw, mask=inside, other=0.0
                )
                values = tl.load(
                    x_ptr + n * sxn + c * sxc + yi * sxh + xi * sxw, mask=read, other=0.0
                )
                total += grads.to(tl.float32) * values.to(tl.float32)
            target = gw_ptr + ((part * channels + c) * K * K + t) * plane + p
            tl.store(target, total, mask=inside)
    if BIAS:
        total = tl.zeros((CHANNEL_BLOCK, PIXEL_BLOCK), dtype=tl.float32)
        for n in range(first, last):
            grads = tl.load(g_ptr + n * sgn + c * sgc + y * sgh + x * sgw, mask=inside, other=0.0)
            total += grads.to(tl.float32)
        tl.store(gb_ptr + (part * channels + c) * plane + p, total, mask=inside)


def _grid(batch: int, channels: int, pixels: int) -> tuple[int, int, int]:
    return batch, triton.cdiv(channels, CHANNEL_BLOCK), triton.cdiv(pixels, PIXEL_BLOCK)


def forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """x (N, C, H_in, W_in) and weight (C, k, k, H, W) in any layout, bias (C, H, W) or None,
    one dtype -> (N, C, H, W) in x's memory format."""
    batch, channels, height_in, width_in = x.shape
    _, k, _, height, width = weight.shape
    bias = bias.contiguous() if bias is not None else None
    out = torch.empty(
        (batch, channels, height, width),
        device=x.device,
        dtype=x.dtype,
        memory_format=_memory_format(x),
    )
    if out.numel():
        _forward_kernel[_grid(batch, channels, height * width)](
            x, weight, bias if bias is not None else weight, out,
            channels, height_in, width_in, height, width,
            *x.stride(), *out.stride(), *weight.stride(),
            STRIDE=stride, K=k, HAS_BIAS=bias is not None,
            CHANNEL_BLOCK=CHANNEL_BLOCK, PIXEL_BLOCK=PIXEL_BLOCK,
        )  # fmt: skip
    return out


def input_grad(
    grad_out: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size, stride: int, like
) -> torch.Tensor:
    """dL/dx (``input_shape``, the memory format of ``like``, the input)."""
    batch, channels, height_in, width_in = input_shape
    _, k, _, height, width = weight.shape
    grad_x = torch.empty(
        input_shape,
        device=grad_out.device,
        dtype=grad_out.dtype,
        memory_format=_memory_format(like),
    )
    if grad_x.numel():
        _input_grad_kernel[_grid(batch, channels, height_in * width_in)](
            grad_out, weight, grad_x,
            channels, height_in, width_in, height, width,
            *grad_out.stride(), *grad_x.stride(), *weight.stride(),
            STRIDE=stride, K=k, CHANNEL_BLOCK=CHANNEL_BLOCK, PIXEL_BLOCK=PIXEL_BLOCK,
        )  # fmt: skip
    return grad_x


def weight_and_bias_grad(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight_shape: torch.Size,
    stride: int,
    weight: bool,
    bias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dL/dW (``weight_shape``) and dL/db (C, H, W), each only where asked for (else None):
    float32 partial sums over slices of the batch (enough slices to fill the device), added."""
    batch, channels, height_in, width_in = x.shape
    _, k, _, height, width = weight_shape
    _, channel_blocks, pixel_blocks = _grid(1, channels, height * width)
    blocks = max(1, channel_blocks * pixel_blocks)  # 0 for no channel or no pixel: nothing to sum
    slices = max(1, min(batch, BATCH_PROGRAMS // blocks))
    per_slice = triton.cdiv(batch, slices) if batch else 1
    slices = triton.cdiv(batch, per_slice) if batch else 1
    partial_weight = x.new_zeros((slices, *weight_shape), dtype=torch.float32) if weight else None
    partial_bias = (
        x.new_zeros((slices, channels, height, width), dtype=torch.float32) if bias else None
    )
    if (weight or bias) and channel_blocks * pixel_blocks:
        placeholder = partial_weight if partial_weight is not None else partial_bias
        _weight_grad_kernel[(slices, channel_blocks, pixel_blocks)](
            grad_out, x,
            placeholder if partial_weight is None else partial_weight,
            placeholder if partial_bias is None else partial_bias,
            batch, per_slice, channels, height_in, width_in, height, width,
            *grad_out.stride(), *x.stride(),
            STRIDE=stride, K=k, WEIGHT=weight, BIAS=bias,
            CHANNEL_BLOCK=CHANNEL_BLOCK, PIXEL_BLOCK=PIXEL_BLOCK,
        )  # fmt: skip
    dtype = grad_out.dtype
    grad_weight = partial_weight.sum(0).to(dtype) if weight else None
    grad_bias = partial_bias.sum(0).to(dtype) if bias else None
    return grad_weight, grad_bias


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels-last for a channels-last input (not also contiguous), else contiguous."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format
