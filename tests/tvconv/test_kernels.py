"""The core op's kernels (C++ and eager) against the reference path, and the fallback."""

import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tvconv import kernels
from tvconv.ops import (
    TVConv,
    TVConvDeploy,
    output_size,
    reference_translation_variant_conv,
    translation_variant_conv,
)


@pytest.fixture(params=["cpp", "eager"])
def kernel(request, monkeypatch):
    if request.param == "cpp" and kernels.cpu_extension() is None:
        pytest.skip("no C++ toolchain here: the eager fallback is tested instead")
    monkeypatch.setenv("TVCONV_KERNEL", request.param)
    return request.param


# batch 7: the C++ forward takes images in blocks of 4, so a full block and a partial one
SHAPES = ((2, 3, 7, 9), (1, 8, 6, 6), (7, 5, 8, 8))
CASES = list(itertools.product((1, 3, 5), (1, 2, 3), (False, True), SHAPES))


@pytest.mark.parametrize(("k", "stride", "with_bias", "shape"), CASES)
def test_forward_and_backward_equal_the_reference(kernel, k, stride, with_bias, shape):
    n, c, h, w = shape
    oh, ow = output_size(h, k, stride), output_size(w, k, stride)
    g = torch.Generator().manual_seed(k * 100 + stride * 10 + with_bias)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(c, k, k, oh, ow, generator=g)
    bias = torch.randn(c, oh, ow, generator=g) if with_bias else None
    grad = torch.randn(n, c, oh, ow, generator=g)
    results = []
    for op in (translation_variant_conv, reference_translation_variant_conv):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias) if t is not None]
        out = op(*leaves, None, stride) if bias is None else op(*leaves, stride)
        out.backward(grad)
        results.append([out, *(t.grad for t in leaves)])
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_cpp_forward_is_the_same_for_nchw_and_channels_last_inputs(stride):
    extension = kernels.cpu_extension()
    if extension is None:
        pytest.skip("no C++ toolchain here")
    g = torch.Generator().manual_seed(stride)
    x = torch.randn(6, 20, 11, 13, generator=g)
    out_h, out_w = output_size(11, 3, stride), output_size(13, 3, stride)
    packed = extension.pack_weight(torch.randn(20, 3, 3, out_h, out_w, generator=g))
    bias = torch.randn(20, out_h, out_w, generator=g)
    from_nchw = extension.forward(x, packed, bias, stride)
    from_channels_last = extension.forward(
        x.contiguous(memory_format=torch.channels_last), packed, bias, stride
    )
    assert from_nchw.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(from_nchw, from_channels_last)
    # images go through the fused pass in blocks of 4: each equals its own single-image result
    for image in range(x.shape[0]):
        alone = extension.forward(x[image : image + 1], packed, bias, stride)[0]
        assert torch.equal(from_nchw[image], alone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("k", "stride", "threads"), [(3, 1, 1), (3, 2, 2), (5, 1, 2), (5, 2, 3)])
def test_cpp_forward_reads_wide_nchw_inputs_in_groups_of_images(k, stride, threads, dtype):
    """Rows of 160 x 100 values: the NCHW forward's ring of transposed rows holds fewer images
    than the batch of 9 (groups of 4, 4 and 1) and the threads' row ranges meet mid-image."""
    extension = kernels.cpu_extension()
    if extension is None:
        pytest.skip("no C++ toolchain here")
    g = torch.Generator().manual_seed(k + stride)
    x = torch.randn(9, 100, 12, 160, generator=g, dtype=dtype)
    out_h, out_w = output_size(12, k, stride), output_size(160, k, stride)
    weight = torch.randn(100, k, k, out_h, out_w, generator=g, dtype=dtype)
    bias = torch.randn(100, out_h, out_w, generator=g, dtype=dtype)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from_nchw = extension.forward(x, extension.pack_weight(weight), bias, stride)
        from_channels_last = extension.forward(
            x.contiguous(memory_format=torch.channels_last),
            extension.pack_weight(weight),
            bias,
            stride,
        )
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(from_nchw, from_channels_last)
    reference = reference_translation_variant_conv(x, weight, bias, stride)
    torch.testing.assert_close(from_nchw, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_batch_gives_an_empty_output_and_zero_weight_grad(kernel, channels_last):
    x = torch.randn(0, 4, 6, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 3, 6, 6, requires_grad=True)
    out = translation_variant_conv(x.requires_grad_(), weight)
    assert out.shape == (0, 4, 6, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(weight.grad, torch.zeros_like(weight))


@pytest.mark.parametrize("shape", [(2, 16, 8, 8), (3, 20, 5, 13), (1, 7, 9, 3), (2, 1, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_channels_last_copy_equals_torch(shape, dtype):
    """The tiled transpose (8 x 8 register tiles plus the leftover channels and pixels)."""
    extension = kernels.cpu_extension()
    if extension is None:
        pytest.skip("no C++ toolchain here")
    x = torch.randn(*shape, dtype=dtype)
    copy = extension.channels_last(x)
    assert copy.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(copy, x)


@pytest.mark.parametrize(("k", "stride"), [(3, 1), (3, 2), (5, 2), (1, 1)])
def test_gradcheck_float64(kernel, k, stride):
    g = torch.Generator().manual_seed(0)
    size = 6
    out = output_size(size, k, stride)
    x = torch.randn(2, 3, size, size - 1, dtype=torch.float64, generator=g)
    weight = torch.randn(
        3, k, k, out, output_size(size - 1, k, stride), dtype=torch.float64, generator=g
    )
    bias = torch.randn(3, *weight.shape[-2:], dtype=torch.float64, generator=g)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(
        lambda a, b, c: translation_variant_conv(a, b, c, stride), inputs
    )


def test_channels_last_and_contiguous_inputs_agree(kernel):
    x = torch.randn(2, 16, 12, 12)
    weight = torch.randn(16, 3, 3, 12, 12)
    out = translation_variant_conv(x, weight)
    out_cl = translation_variant_conv(x.contiguous(memory_format=torch.channels_last), weight)
    torch.testing.assert_close(out, out_cl, rtol=0, atol=0)


def test_deployed_weight_is_stored_in_the_kernel_layout_and_round_trips():
    weight, bias = torch.randn(6, 3, 3, 5, 7), torch.randn(6, 5, 7)
    layer = TVConvDeploy.from_tensors(weight, bias, stride=1)
    assert layer.weight.shape == (6, 3, 3, 5, 7)
    assert layer.weight.permute(3, 1, 2, 4, 0).is_contiguous()  # (H, k, k, W, C) in memory
    torch.testing.assert_close(layer.weight, weight, rtol=0, atol=0)
    copy = TVConvDeploy(6, 5, 7, bias=True)
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(copy(x), reference_translation_variant_conv(x, weight, bias))


def test_cpp_training_step_saves_no_unfolded_input(kernel):
    """Memory grows like a depthwise conv's: the backward keeps the input and the weights (a
    k*k-times unfolded input would be 9x the input)."""
    x = torch.randn(4, 8, 10, 10, requires_grad=True)
    layer = TVConv(8, 10, 10, inter_channels=8, inter_layers=1)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x).sum().backward()
    batch_sized = [t for t in saved if t.dim() == 4 and t.shape[0] == 4]
    padded = 4 * 8 * 12 * 12  # the eager path keeps the zero-padded input, the C++ path x
    assert sum(t.numel() for t in batch_sized) == (x.numel() if kernel == "cpp" else padded)


def test_failed_build_falls_back_to_eager_with_one_warning(monkeypatch):
    monkeypatch.setenv("TVCONV_KERNEL", "auto")
    kernels.cpu_extension.cache_clear()

    def no_compiler():
        raise OSError("g++: command not found")

    monkeypatch.setattr(kernels, "_build", no_compiler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert kernels.choose(torch.ones(1)) == "eager"
            x, weight = torch.randn(2, 3, 6, 6), torch.randn(3, 3, 3, 6, 6)
            torch.testing.assert_close(
                translation_variant_conv(x, weight), reference_translation_variant_conv(x, weight)
            )
        messages = [str(w.message) for w in caught if "C++ kernel unavailable" in str(w.message)]
        assert len(messages) == 1 and "g++: command not found" in messages[0]
        monkeypatch.setenv("TVCONV_KERNEL", "cpp")
        kernels.cpu_extension.cache_clear()
        with pytest.raises(RuntimeError, match="TVCONV_KERNEL=cpp but the C\\+\\+ kernel failed"):
            kernels.cpu_extension()
    finally:
        kernels.cpu_extension.cache_clear()


def test_kernel_choice_per_dtype_and_setting(monkeypatch):
    half = torch.ones(1, dtype=torch.bfloat16)
    monkeypatch.setenv("TVCONV_KERNEL", "auto")
    assert kernels.choose(half) == "eager"
    assert kernels.choose(torch.ones(1), torch.ones(1, dtype=torch.float64)) == "eager"
    monkeypatch.setenv("TVCONV_KERNEL", "eager")
    assert kernels.choose(torch.ones(1)) == "eager"
    monkeypatch.setenv("TVCONV_KERNEL", "cpp")
    with pytest.raises(RuntimeError, match="CPU float32/float64"):
        kernels.choose(half)
    monkeypatch.setenv("TVCONV_KERNEL", "fast")
    with pytest.raises(ValueError, match="TVCONV_KERNEL='fast'"):
        kernels.choose(torch.ones(1))


HOLD_BUILD_LOCK = """
import sys, time
from pathlib import Path
from tvconv.kernels import build_lock
with build_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_build_lock_left_by_a_killed_builder_never_hangs(tmp_path):
    folder = tmp_path / "tvconv_cpu_0123"
    folder.mkdir()
    (folder / "lock").touch()  # torch's own lock file, left behind by a builder killed mid-build
    with kernels.build_lock(folder, wait_s=5):
        assert not (folder / "lock").exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_BUILD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        waiting = kernels.build_lock(folder, wait_s=0.5, poll_s=0.1)
        with pytest.raises(RuntimeError, match=rf"build lock {folder}\.lock \(held by pid"):
            waiting.__enter__()
    finally:
        holder.kill()
        holder.wait()
    with kernels.build_lock(folder, wait_s=5):  # its holder died: the kernel released it
        pass


def test_each_source_version_builds_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = kernels.extension_name()
    source = tmp_path / "translation_variant.cpp"
    source.write_bytes(kernels.SOURCE.read_bytes() + b"\n// another version\n")
    monkeypatch.setattr(kernels, "SOURCE", source)
    other = kernels.extension_name()
    assert other != name and other.startswith("tvconv_cpu_")
    assert kernels.build_directory(name) == tmp_path / name
    assert kernels.build_directory(other) == tmp_path / other


def test_each_environment_builds_in_its_own_folder(monkeypatch):
    """torch's build file names its header paths: two environments (a second checkout's venv, a
    symlinked one) sharing one folder would rebuild on every alternation."""
    import torch.utils.cpp_extension

    name = kernels.extension_name()
    elsewhere = [
        path.replace("/", "/other/", 1) for path in torch.utils.cpp_extension.include_paths()
    ]
    monkeypatch.setattr(torch.utils.cpp_extension, "include_paths", lambda *args: elsewhere)
    assert kernels.extension_name() != name


def test_a_build_says_when_it_starts_and_ends_and_a_load_says_nothing(
    tmp_path, monkeypatch, capsys
):
    import torch.utils.cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    built = []

    def fake_load(name, build_directory, **_kwargs):
        (Path(build_directory) / f"{name}.so").write_bytes(b"built")
        built.append(name)
        return name

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    build = kernels._build.__wrapped__  # past the per-process cache
    assert build() == kernels.extension_name()
    err = capsys.readouterr().err
    assert "TVConv kernel: building" in err and "TVConv kernel: built in" in err
    build()  # already built: loaded without a word
    assert len(built) == 2 and capsys.readouterr().err == ""
