"""Which floating-point precision a run should use on this machine.

bfloat16 matrix products run natively on NVIDIA GPUs since Ampere and on x86 CPUs with AMX or AVX512-BF16 (Intel Xeon
since Cooper Lake / Sapphire Rapids, AMD Zen 4): there a bf16 GEMM is several times faster than a float32 one.
Elsewhere bf16 is emulated and slower than float32, so the choice is made per machine, logged, and can always be
overridden. `PROConfig` and `DOVEConfig` resolve an unset `bf16` this way on CPU runs (`resolve_config_bf16`; see
`docs/performance.md`, "bf16 on CPU").
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch


logger = logging.getLogger(__name__)

# The `/proc/cpuinfo` flags that give a native bf16 dot product on x86
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports in `/proc/cpuinfo` (empty elsewhere, e.g. macOS or Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)
    return ()


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AMX or AVX512-BF16)."""
    return bool(cpu_bf16_flags())


def bf16_is_fast(device: torch.device | str | None = None) -> bool:
    """Whether bfloat16 is the faster choice on `device` (default: CUDA when available, else the CPU)."""
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


def choose_bf16(
    requested: bool | None = None, device: torch.device | str | None = None, what: str = "this run"
) -> bool:
    """Resolve a bf16 setting: `True`/`False` as given, `None` for "bf16 where it is fast"; the choice is logged.

    Example:

    ```python
    >>> from trl_ranking.precision import choose_bf16
    >>> choose_bf16(False)
    False

    ```
    """
    if requested is not None:
        return bool(requested)
    fast = bf16_is_fast(device)
    logger.info("%s: %s (%s)", what, "bfloat16" if fast else "float32", _why(fast, device))
    return fast


def _why(fast: bool, device: torch.device | str | None) -> str:
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cpu":
        flags = ", ".join(cpu_bf16_flags())
        return (
            f"native bf16 on this CPU: {flags}"
            if fast
            else "no AMX or AVX512-BF16 on this CPU: bf16 would be emulated"
        )
    return f"native bf16 on {device.type}" if fast else f"no native bf16 on {device.type}"


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (CUDA, MPS, XPU, ...) or transformers a TPU: where `Trainer` does not train
    on the CPU unless told to (`use_cpu=True`)."""
    from transformers.utils import is_torch_xla_available

    accelerator = getattr(torch, "accelerator", None)
    available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return bool(available) or is_torch_xla_available()


def resolve_config_bf16(config, what: str) -> None:
    """Resolve an unset `bf16` (`None`) of a `PROConfig`/`DOVEConfig` on a CPU run, before TRL resolves it.

    TRL's configs turn `bf16=None` into `not fp16`, whatever the hardware: on a CPU with `use_cpu=True` that is
    bfloat16 autocast even where the CPU has no native bf16 (emulated, slower than float32), and on a machine without
    an accelerator and `use_cpu=False`, an error from `transformers` ("Your setup doesn't support bf16/gpu"). Here,
    on a CPU run (`use_cpu=True`, or no accelerator at all):

    - `use_cpu=True`: bf16 where the CPU computes it natively (AMX or AVX512-BF16, `cpu_supports_bf16`), float32
      elsewhere.
    - `use_cpu=False` (no accelerator): float32, as `transformers` allows CPU bf16 only with `use_cpu=True`; where
      the CPU has native bf16, a warning says that `use_cpu=True` would turn it on.

    The choice is logged. An explicit `bf16=True`/`False`, `fp16=True` and every run on an accelerator keep TRL's
    rule unchanged.
    """
    if config.bf16 is not None or config.fp16:
        return
    if config.use_cpu:
        config.bf16 = choose_bf16(None, "cpu", what)
    elif not accelerator_available():
        config.bf16 = False
        if cpu_supports_bf16():
            logger.warning(
                "%s: float32 on this CPU. It computes bf16 natively (%s): set `use_cpu=True` (`--use_cpu` on the "
                "command line) to train in bf16 autocast, about 1.5x faster; `bf16=False` keeps float32 without this "
                "message.",
                what,
                ", ".join(cpu_bf16_flags()),
            )
        else:
            logger.info("%s: float32 (%s)", what, _why(False, "cpu"))


def precision_note(bf16: bool) -> str:
    """One line for a run's output: the precision and why."""
    flags = ", ".join(cpu_bf16_flags())
    if bf16:
        where = (
            f"CPU with {flags}"
            if flags and not torch.cuda.is_available()
            else "GPU"
            if torch.cuda.is_available()
            else "CPU"
        )
        return f"bfloat16 ({where}: native bf16 matrix products)"
    return "float32 (no native bf16 on this machine)" if not bf16_is_fast() else "float32 (bf16 switched off)"
