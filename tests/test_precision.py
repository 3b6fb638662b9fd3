"""`trl_ranking.precision`: bf16 where the CPU computes it natively, and the configs' default for `bf16=None`.

Machines with and without native bf16 are simulated by replacing `cpu_bf16_flags` (the flags read from
`/proc/cpuinfo`) and `accelerator_available`."""

from __future__ import annotations

import logging

import pytest

from trl_ranking import PROConfig, precision
from trl_ranking.dove import DOVEConfig


CONFIGS = [PROConfig, DOVEConfig]


@pytest.fixture
def cpu_machine(monkeypatch):
    """A machine without an accelerator whose CPU reports the given bf16 flags."""

    def simulate(flags: tuple[str, ...]) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)
        monkeypatch.setattr(precision, "accelerator_available", lambda: False)

    return simulate


def make(config_cls, tmp_path, **values):
    return config_cls(output_dir=str(tmp_path / "out"), report_to="none", **values)


@pytest.mark.parametrize("config_cls", CONFIGS)
@pytest.mark.parametrize("flags", [("avx512_bf16",), ("amx_bf16", "avx512_bf16")])
def test_unset_bf16_on_a_cpu_with_native_bf16_is_bf16(tmp_path, cpu_machine, caplog, config_cls, flags):
    cpu_machine(flags)
    with caplog.at_level(logging.INFO, logger="trl_ranking.precision"):
        config = make(config_cls, tmp_path, use_cpu=True)
    assert config.bf16 is True and config.mixed_precision == "bf16"
    assert f"{config_cls.__name__}: bfloat16" in caplog.text and flags[-1] in caplog.text  # the choice is logged


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_unset_bf16_on_a_cpu_without_native_bf16_is_float32(tmp_path, cpu_machine, caplog, config_cls):
    """TRL's rule (`bf16 = not fp16`) would give emulated bf16 here, slower than float32."""
    cpu_machine(())
    with caplog.at_level(logging.INFO, logger="trl_ranking.precision"):
        config = make(config_cls, tmp_path, use_cpu=True)
    assert config.bf16 is False and config.mixed_precision == "no"
    assert "float32" in caplog.text and "no AMX or AVX512-BF16" in caplog.text


@pytest.mark.parametrize("config_cls", CONFIGS)
@pytest.mark.parametrize("flags", [(), ("avx512_bf16",)])
def test_explicit_bf16_is_kept(tmp_path, cpu_machine, config_cls, flags):
    cpu_machine(flags)
    assert make(config_cls, tmp_path, use_cpu=True, bf16=False).bf16 is False  # float32 stays available
    assert make(config_cls, tmp_path, use_cpu=True, bf16=True).bf16 is True  # emulated bf16 too, if asked


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_unset_bf16_without_use_cpu_on_a_cpu_only_machine(tmp_path, cpu_machine, caplog, config_cls):
    """`transformers` allows CPU bf16 with `use_cpu=True` only (TRL's default raises here): float32, and where the
    CPU has native bf16 a warning that names `use_cpu=True`."""
    cpu_machine(("avx512_bf16",))
    with caplog.at_level(logging.INFO, logger="trl_ranking.precision"):
        config = make(config_cls, tmp_path)
    assert config.bf16 is False
    assert "use_cpu=True" in caplog.text and any(r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    cpu_machine(())
    with caplog.at_level(logging.INFO, logger="trl_ranking.precision"):
        assert make(config_cls, tmp_path).bf16 is False
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_accelerator_runs_and_fp16_keep_trl_default(monkeypatch):
    """On an accelerator (`use_cpu=False`), and with `fp16=True`, an unset `bf16` is left to TRL's `__post_init__`
    (`bf16 = not fp16`), which runs next."""
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    monkeypatch.setattr(precision, "accelerator_available", lambda: True)
    for fp16, use_cpu in [(False, False), (True, True)]:
        args = type("Args", (), {"bf16": None, "fp16": fp16, "use_cpu": use_cpu})()
        precision.resolve_config_bf16(args, "test")
        assert args.bf16 is None


def test_choose_bf16(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert precision.choose_bf16(None, "cpu") is True
    assert precision.choose_bf16(False, "cpu") is False
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    with caplog.at_level(logging.INFO, logger="trl_ranking.precision"):
        assert precision.choose_bf16(None, "cpu", what="bench") is False
    assert "bench: float32" in caplog.text
    assert precision.choose_bf16(True, "cpu") is True
