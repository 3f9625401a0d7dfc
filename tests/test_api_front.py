"""The public front (audit.load_gan ... audit.run): names that cannot be shadowed by
submodules, the tutorial of docs/python-api.md run as written, and the in-memory audit
equal to the run folder's."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import audit

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_public_names_survive_importing_every_submodule() -> None:
    """``import audit.decode`` sets the attribute ``audit.decode`` to the module: a public
    function of that name would be shadowed. No public name is a submodule's name, and
    after every submodule is imported each public name is still what it was."""
    submodules = {m.name.split(".")[1] for m in pkgutil.iter_modules(audit.__path__,
                                                                     "audit.")}
    assert not set(audit.__all__) & submodules
    before = {name: getattr(audit, name) for name in audit.__all__}
    for info in pkgutil.walk_packages(audit.__path__, "audit."):
        if info.name.startswith("audit.__main__"):
            continue
        importlib.import_module(info.name)
    for name in audit.__all__:
        value = getattr(audit, name)
        assert value is before[name] and not isinstance(value, types.ModuleType), name
    callables = [n for n in audit.__all__ if n != "__version__"]
    assert all(callable(getattr(audit, n)) for n in callables)


def test_every_public_name_has_a_docstring() -> None:
    for name in audit.__all__:
        if name != "__version__":
            assert (getattr(audit, name).__doc__ or "").strip(), name


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory, monkeypatch_module) -> dict:
    """The tutorial's code blocks, run in order in one namespace (as a notebook would)."""
    monkeypatch_module.chdir(tmp_path_factory.mktemp("notebook"))
    namespace: dict = {}
    for i, block in enumerate(_blocks()):
        exec(compile(block, f"{TUTORIAL.name} block {i + 1}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_tutorial_has_the_whole_audit_in_under_15_lines() -> None:
    first = _blocks()[0]
    lines = [ln for ln in first.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(lines) < 15 and "to_html" in first


@pytest.mark.slow
def test_the_tutorial_runs_and_writes_a_report(tutorial) -> None:
    html = Path("demo-report.html").read_text(encoding="utf-8")
    results = tutorial["results"]
    for label in results.verdicts["label"]:
        assert label in html
    assert isinstance(results, audit.AuditResults)
    assert set(results.verdicts["verdict"]) <= set(audit.Verdict)


@pytest.mark.slow
def test_the_in_memory_audit_equals_the_run_folder(tutorial) -> None:
    """Same images, batches, seeds and float16 activations: every section of results.json
    is equal, but the run folder's meta and its random-weights baseline."""
    mem, ran = tutorial["results"].to_dict(), tutorial["ran"].to_dict()
    differ = sorted(k for k in set(mem) | set(ran) if mem.get(k) != ran.get(k))
    assert differ == ["baseline", "meta"]
    assert ran["baseline"] and not mem["baseline"]    # no random-weights D in memory

    def audited(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[frame["split"] == "audit"].reset_index(drop=True)
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(audited(tutorial["results"].predictions),
                                  audited(tutorial["ran"].predictions))


@pytest.mark.slow
def test_activations_and_decoders_hold_what_their_docstrings_say(tutorial) -> None:
    real, decoders, fake = tutorial["real"], tutorial["decoders"], tutorial["fake"]
    assert len(real) == len(real.image_ids) == len(real.scores) == len(real.labels)
    assert all(a.dtype == np.float16 and a.shape[0] == len(real) for a in real.features.values())
    assert real.scores.dtype == np.float32
    assert list(real.labels["image_id"]) == real.image_ids
    table = decoders.decode(fake, source="generated")
    assert list(table["image_id"]) == fake.image_ids
    assert (table["source"] == "generated").all() and (table["split"] == "audit").all()
    assert table["true__tone"].isna().all()           # nothing is known of generated images
    probs = table[[c for c in table if c.startswith("prob__tone__")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.fixture
def tiny_model(tiny_discriminator):
    from audit.load import InputSpec, LoadedModel, state_sha256

    return LoadedModel(module=tiny_discriminator, spec="test:tiny",
                       sha256=state_sha256(tiny_discriminator), input=InputSpec(16, 1))


def test_in_memory_activations_equal_the_store_of_extract(tiny_model, tiny_images, tmp_path):
    """The in-memory path and the store run the same batches, hooks and pooling."""
    from audit.extract import extract

    acts = audit.record_activations(tiny_model, tiny_images, layers=["0", "2"], batch_size=8,
                                    pooling="avgmax")
    store = extract(tiny_model, ["0", "2"], tiny_images, out=tmp_path / "s", batch_size=8,
                    pooling="avgmax", progress=False)
    assert acts.image_ids == [str(i) for i in store.image_ids] == [str(i) for i in range(32)]
    for layer in ("0", "2"):
        np.testing.assert_array_equal(acts.features[layer], store.read(layer))
    np.testing.assert_array_equal(acts.scores, store.scores())
    with torch_inference():
        expected = tiny_model.scores(tiny_model.forward(tiny_images, None)).numpy()
    np.testing.assert_allclose(acts.scores, expected, rtol=1e-5, atol=1e-6)


def torch_inference():
    import torch

    return torch.inference_mode()


def test_train_decoders_without_a_concept_set_says_what_to_pass(tiny_model, tiny_images):
    acts = audit.record_activations(tiny_model, tiny_images[:4], layers=["2"])
    with pytest.raises(audit.AuditError, match="concept_set="):
        audit.train_decoders(acts)
