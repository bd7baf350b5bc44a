"""SS-OP at the cuts of the real MiniLM (DESIGN §3): the subspace is computed once per run and
cut, identical on every node (checked across processes), and a device's noise is what it sends."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from elsa.errors import ConfigError
from elsa.model.split import SplitModel
from elsa.perturb import cut_activations, orthogonal_component
from elsa.runtime.config import parse_config
from elsa.runtime.privacy import RunPrivacy
from elsa.runtime.probing import load_probes

CONFIG = parse_config({"control": {"num_probes": 64}, "train": {"max_length": 32}, "privacy": {"kappa": 1.0}})

_OTHER_NODE = """
import torch
torch.set_num_threads(1)
from elsa.runtime.config import parse_config
from elsa.runtime.privacy import RunPrivacy
from elsa.runtime.probing import load_probes
from elsa.runtime.simulation import load_run_model
config = parse_config({"control": {"num_probes": 64}, "train": {"max_length": 32}, "privacy": {"kappa": 1.0}})
model = load_run_model(config, 5)
print(RunPrivacy(model, load_probes(model, config), config).digest(1))
"""


@pytest.fixture(scope="module")
def privacy(minilm_model: SplitModel) -> RunPrivacy:
    return RunPrivacy(minilm_model, load_probes(minilm_model, CONFIG), CONFIG)


def test_the_subspace_is_identical_on_another_node(privacy: RunPrivacy) -> None:
    """Another process (another node: its own model load, probe tokenisation, eigensolver) with
    another thread count derives the very same U at the first cut."""
    other = subprocess.run(
        [sys.executable, "-c", _OTHER_NODE], capture_output=True, text=True, check=True, timeout=300
    )
    mine = privacy.digest(1)
    assert mine is not None and other.stdout.strip().splitlines()[-1] == mine
    u = privacy.subspace(1).u
    assert u.shape == (384, CONFIG.privacy.rank)
    torch.testing.assert_close(u.T @ u, torch.eye(CONFIG.privacy.rank), atol=1e-4, rtol=0)
    assert privacy.subspace(1) is privacy.subspace(1)  # computed once per cut


def test_a_node_with_another_subspace_refuses_the_run(privacy: RunPrivacy) -> None:
    privacy.check(1, privacy.digest(1))
    privacy.check(1, None)  # SS-OP off at the cloud: nothing to compare
    with pytest.raises(ConfigError, match="semantic subspace"):
        privacy.check(1, "0" * 32)


def test_device_noise_is_orthogonal_to_u_and_kappa_0_is_off(
    privacy: RunPrivacy, minilm_model: SplitModel
) -> None:
    probes = load_probes(minilm_model, CONFIG)
    acts, _ = cut_activations(minilm_model, 1, probes.input_ids[:8], probes.attention_mask[:8])
    noise = privacy.noise(1, device_index=3)
    assert noise is not None and noise.kappa == CONFIG.privacy.kappa
    sent = noise(acts, "train")
    u = privacy.subspace(1).u
    # the kept directions are untouched; the noise lives in the orthogonal complement
    torch.testing.assert_close(sent @ u, acts @ u, atol=1e-4, rtol=1e-4)
    added = sent - acts
    assert float(added.norm()) > 0.5 * float(orthogonal_component(acts, u).norm())
    torch.testing.assert_close(orthogonal_component(added, u), added, atol=1e-4, rtol=1e-4)
    # streams are independent: drawing "eval" noise does not change the next "train" draw
    reproducible = parse_config(
        {**CONFIG.model_dump(mode="json"), "privacy": {"kappa": 1.0, "noise_seed": "run"}}
    )
    run_privacy = RunPrivacy(minilm_model, probes, reproducible)
    a, b = run_privacy.noise(1, 3), run_privacy.noise(1, 3)
    assert a is not None and b is not None
    b(acts, "eval")
    assert torch.equal(a(acts, "train"), b(acts, "train"))
    # OS-seeded noise (the default) differs between two devices built alike
    c, d = privacy.noise(1, 3), privacy.noise(1, 3)
    assert c is not None and d is not None and not torch.equal(c(acts), d(acts))
    off = parse_config({**CONFIG.model_dump(mode="json"), "privacy": {"kappa": 0.0}})
    assert RunPrivacy(minilm_model, probes, off).noise(1, 3) is None
    assert RunPrivacy(minilm_model, probes, off).digest(1) is None
