"""Fast kernels behind TVConv's core op, chosen per device, with the eager path as fallback.

- ``cpp`` (CPU, float32/float64): ``csrc/translation_variant.cpp``, built on first use with
  ``torch.utils.cpp_extension`` (cached under ``TORCH_EXTENSIONS_DIR``, one folder per source
  version, CPU, torch and Python version, shared by every checkout; a build
  lock that its holder's death releases, ``build_lock``). Channels-last activations and weights
  packed as (H, k, k, W, C), so every tap is one long contiguous multiply-add; 3x3 taps fused
  into one pass per output row; padding never materialised; NCHW inputs read in place (rows
  transposed into cache as needed); forward, input and weight gradients.
- ``triton`` (CUDA, float32/bfloat16/float16): ``tvconv._triton``, Triton kernels compiled on
  first use per (k, dtype) and cached on disk by Triton; forward, input, weight and bias
  gradients, any layout read in place. On CPU tensors only in Triton's interpreter
  (``TRITON_INTERPRET=1``, what the tests use), and only when asked for by name.
- ``eager``: shift-and-accumulate over the k*k taps in PyTorch ops (``tvconv.ops``); any device
  and dtype: the fallback where neither applies (no per-pixel-kernel op in cuDNN).

Why this choice, with the ratios ``make bench-kernels`` measured: README.md, "Kernels".

``TVCONV_KERNEL`` = ``auto`` (default: ``cpp`` on CPU, ``triton`` on CUDA, where they apply and
build), ``cpp`` / ``triton`` (fail if it cannot run) or ``eager``. A failed build or a missing
Triton warns once and falls back to ``eager``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from tvconv._lock import exclusive

SOURCE = Path(__file__).parent / "csrc" / "translation_variant.cpp"
CHOICES = ("auto", "cpp", "triton", "eager")
CPP_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CFLAGS = ("-O3", "-march=native", "-fopenmp")


_FORCED: list[str] = []  # innermost ``forced`` choice last


@contextlib.contextmanager
def forced(choice: str) -> Iterator[None]:
    """Use ``choice`` inside the block whatever ``TVCONV_KERNEL`` says (the MAC counters trace
    the eager path: an opaque C++ call would count as zero)."""
    if choice not in CHOICES:
        raise ValueError(f"kernel choice {choice!r}; expected one of {', '.join(CHOICES)}")
    _FORCED.append(choice)
    try:
        yield
    finally:
        _FORCED.pop()


def requested() -> str:
    if _FORCED:
        return _FORCED[-1]
    choice = os.environ.get("TVCONV_KERNEL", "auto")
    if choice not in CHOICES:
        raise ValueError(f"TVCONV_KERNEL={choice!r}; expected one of {', '.join(CHOICES)}")
    return choice


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = platform.processor()
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines))) + platform.machine()


def extension_name() -> str:
    """The module's name: one per source version, compiler flags, CPU, torch and Python, and
    torch's header paths as this interpreter sees them. The build file names those paths, so two
    environments sharing a build folder (a second checkout's venv, a symlinked one) would make
    ninja rebuild on every alternation, about a minute each time: each gets its own folder."""
    from torch.utils.cpp_extension import include_paths

    digest = hashlib.sha256(
        SOURCE.read_bytes()
        + " ".join(CFLAGS).encode()
        + _cpu_signature().encode()
        + torch.__version__.encode()
        + sys.version.encode()
        + "\n".join(include_paths()).encode()
    ).hexdigest()[:12]
    return f"tvconv_cpu_{digest}"


def build_directory(name: str) -> Path:
    """Where ``name`` is built: ``$TORCH_EXTENSIONS_DIR/<name>`` (default
    ``~/.cache/torch_extensions/<name>``), its own folder per source version."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / name


BUILD_WAIT_S = 900.0  # a build takes about 50 s on 2 cores; waiting longer means a hung builder


@contextlib.contextmanager
def build_lock(folder: Path, wait_s: float = BUILD_WAIT_S, poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``<folder>.lock`` (``tvconv._lock.exclusive``, never stale) while the extension in
    ``folder`` is built or loaded. Holding it, any lock file torch's own builder left in the
    folder belongs to a dead process and is removed: a kill during a build never hangs later
    runs. Waits at most ``wait_s``, then raises RuntimeError naming the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(
        folder.with_name(folder.name + ".lock"),
        "the TVConv kernel build",
        wait_s,
        poll_s,
        advice="stop that process, or use TVCONV_KERNEL=eager",
    ):
        (folder / "lock").unlink(missing_ok=True)  # torch's baton, left by a dead process
        yield


@cache
def _build() -> ModuleType:
    """Build (or load the built) extension in its own folder, from a copy of the source kept
    there: every checkout of the same source in one environment then shares one build, never
    rebuilding another's (torch's build file names the source and include paths)."""
    from torch.utils.cpp_extension import load

    name = extension_name()
    folder = build_directory(name)
    with build_lock(folder):
        source = folder / SOURCE.name
        if not source.is_file() or source.read_bytes() != SOURCE.read_bytes():
            temporary = folder / f".{SOURCE.name}.{os.getpid()}.tmp"
            shutil.copyfile(SOURCE, temporary)
            os.replace(temporary, source)
        built = folder / f"{name}.so"
        fresh = not built.is_file() or built.stat().st_mtime < source.stat().st_mtime
        if fresh:
            print(
                f"TVConv kernel: building {folder} (first use of this source here, about a minute)",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        module = load(
            name=name,
            sources=[str(source)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=["-fopenmp"],
            build_directory=str(folder),
            verbose=False,
        )
        if fresh:
            print(
                f"TVConv kernel: built in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return module


@cache
def cpu_extension() -> ModuleType | None:
    """The built C++ kernels, or None (with one warning) when they cannot be built here."""
    try:
        return _build()
    except Exception as error:  # no compiler, no ninja, a build error: the eager path works
        if requested() == "cpp":
            message = f"TVCONV_KERNEL=cpp but the C++ kernel failed to build: {error}"
            raise RuntimeError(message) from error
        warnings.warn(
            f"TVConv C++ kernel unavailable ({type(error).__name__}: {str(error)[:200]}); "
            "using the eager PyTorch path (slower, same results)",
            stacklevel=3,
        )
        return None


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight in the C++ kernels' (H, k, k, W, C) layout: a view when it is stored that way
    (``TVConvDeploy``), else a packed copy (the training form's freshly generated weights)."""
    return cpu_extension().pack_weight(weight)


@cache
def triton_kernels() -> ModuleType | None:
    """``tvconv._triton``, or None (with one warning) when Triton is missing or fails to load."""
    try:
        from tvconv import _triton
    except Exception as error:  # not installed (CPU wheels, macOS), or a broken install
        if requested() == "triton":
            raise RuntimeError(
                f"TVCONV_KERNEL=triton but Triton is unavailable: {error}"
            ) from error
        warnings.warn(
            f"TVConv Triton kernels unavailable ({type(error).__name__}: {str(error)[:200]}); "
            "using the eager PyTorch path on CUDA (slower, same results)",
            stacklevel=3,
        )
        return None
    return _triton


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def choose(*tensors: torch.Tensor | None) -> str:
    """``cpp``, ``triton`` or ``eager`` for these operands."""
    choice = requested()
    if choice == "eager":
        return "eager"
    present = [t for t in tensors if t is not None]
    devices = {t.device.type for t in present}
    dtypes = {t.dtype for t in present}
    if choice == "triton":
        if not (devices <= {"cuda"} or _interpreting()) or not dtypes <= set(TRITON_DTYPES):
            got = sorted({(t.device.type, str(t.dtype)) for t in present})
            raise RuntimeError(
                "TVCONV_KERNEL=triton needs CUDA float32/bfloat16/float16 operands (CPU ones only "
                f"with TRITON_INTERPRET=1), got {got}"
            )
        if triton_kernels() is None:  # an earlier auto choice found it missing (cached)
            raise RuntimeError("TVCONV_KERNEL=triton but Triton is unavailable (see its warning)")
        return "triton"
    if devices == {"cuda"} and dtypes <= set(TRITON_DTYPES) and choice == "auto":
        return "triton" if triton_kernels() is not None else "eager"
    applies = devices == {"cpu"} and len(dtypes) == 1 and dtypes <= set(CPP_DTYPES)
    if not applies:
        if choice == "cpp":
            raise RuntimeError(
                "TVCONV_KERNEL=cpp needs CPU float32/float64 operands of one dtype, got "
                f"{sorted({(t.device.type, str(t.dtype)) for t in present})}"
            )
        return "eager"
    return "cpp" if cpu_extension() is not None else "eager"
