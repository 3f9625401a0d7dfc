"""The counterfactual stage end to end on the demo at small n (audit.counterfactual): the run
folder it writes, what it measures from it, the report section, caching and the manifest.

The statistics themselves are pinned in tests/test_measure_counterfactual.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bad_inputs import FIXED, invoke, shared_run, write_config

CF = {"enabled": True, "n": 8, "steps": 5, "span": 1.5, "seed": 3, "strip_latents": 2}


@pytest.fixture(scope="module")
def cf_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """The shared tiny run copied, then run again with the counterfactual test enabled (the
    stages before it reused): (run folder, config file, the run's output)."""
    base = tmp_path_factory.mktemp("cf")
    run = shutil.copytree(shared_run(tmp_path_factory, "tiny"), base / "run")
    config = write_config(base / "audit.yaml", {**FIXED, "out": str(run), "counterfactual": CF})
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    return run, config, result.output


def test_the_stage_runs_after_the_reused_stages(cf_run) -> None:
    _, _, output = cf_run
    for stage in ("extract", "decoders", "baseline", "decode", "samples"):
        assert f"[{stage}] up to date" in output
    assert "[counterfactual] done" in output
    assert "[measure] done" in output  # measured again: its key names the new stage


def test_the_edits_table_holds_every_edited_image(cf_run) -> None:
    run, _, _ = cf_run
    edits = pd.read_parquet(run / "counterfactual" / "edits.parquet")
    doc = json.loads((run / "counterfactual" / "directions.json").read_text())
    # digits_tone protects tone and stroke, both binary: one direction each
    assert [(d["concept"], d["group"]) for d in doc["directions"]] == [("tone", "dark"),
                                                                      ("stroke", "thick")]
    assert len(edits) == 2 * CF["n"] * CF["steps"]
    assert sorted(edits["latent"].unique()) == list(range(CF["n"]))
    np.testing.assert_allclose(sorted(edits["offset"].unique()), np.linspace(-1.5, 1.5, 5))
    for concept, groups in (("tone", ("light", "dark")), ("digit", tuple("0123456789"))):
        total = edits[[f"prob__{concept}__{g}" for g in groups]].sum(axis=1)
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert doc["directions"][0]["n_fit"] == FIXED["generator"]["n"]  # the audited images


def test_the_unedited_step_is_the_latent_the_generator_draws(cf_run) -> None:
    """At offset 0 an edit is the plain image of its latent (index generator.n + i, seed
    counterfactual.seed): generated and scored here independently, through the extractor."""
    from audit.config import load_run_config
    from audit.extract import activations_in_memory
    from audit.images import TensorSource, to_model_input
    from audit.load import generate_batch, load_discriminator, load_generator

    run, _, _ = cf_run
    cfg = load_run_config(run)
    edits = pd.read_parquet(run / "counterfactual" / "edits.parquet")
    middle = edits[(edits["concept"] == "tone") & (edits["offset"] == 0.0)].sort_values("latent")
    g = load_generator(cfg.generator)
    images = generate_batch(g, range(cfg.generator.n, cfg.generator.n + CF["n"]),
                            seed=CF["seed"])
    d = load_discriminator(cfg.discriminator)
    scores = activations_in_memory(d, TensorSource(to_model_input((images + 1) / 2, d.input)),
                                   layers="auto", batch_size=cfg.discriminator.batch_size).scores
    np.testing.assert_allclose(middle["score"].to_numpy(), scores, rtol=1e-4, atol=1e-4)


def test_results_hold_the_effects_and_the_leakage_of_the_edits(cf_run) -> None:
    run, _, _ = cf_run
    results = json.loads((run / "results.json").read_text())
    section = results["counterfactual"]
    assert section["steps"] == 5 and section["n"] == 8
    edits = pd.read_parquet(run / "counterfactual" / "edits.parquet")
    for row in section["directions"]:
        sel = edits[edits["concept"] == row["concept"]]
        first = sel[sel["step"] == 0].sort_values("latent")
        last = sel[sel["step"] == 4].sort_values("latent")
        for other, groups in (("digit", list("0123456789")), ("tone", ["light", "dark"]),
                              ("stroke", ["thin", "thick"])):
            cols = [f"prob__{other}__{g}" for g in groups]
            tv = 0.5 * np.abs(last[cols].to_numpy() - first[cols].to_numpy()).sum(axis=1)
            expected = row["concept_change"] if other == row["concept"] else row["leakage"][other]
            assert tv.mean() == pytest.approx(expected)
        assert row["effect"]["n"] == 8
    ids = {f["id"] for f in results["findings"] if f["kind"] == "counterfactual_treatment"}
    assert ids == {f"F-CFT-{r['concept']}-{r['group']}" for r in section["directions"]
                   if r["significant"]}


def test_the_report_shows_the_section_with_its_strips(cf_run) -> None:
    run, _, _ = cf_run
    html = (run / "report.html").read_text()
    start = html.index('<section id="counterfactual"')
    section = html[start:html.index("</section>", start)]
    assert "12. Counterfactual treatment test" in section
    assert section.count('<img class="strip" src="data:image/png;base64,') == 2
    assert 'role="img"' in section and "Counterfactual treatment: effects and leakage" in section
    manifest = json.loads((run / "manifest.json").read_text())
    assert "samples/counterfactual/tone-dark.png" in manifest["artifacts"]


def test_a_second_run_reuses_the_stage_and_the_folder_verifies(cf_run) -> None:
    run, config, _ = cf_run
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    assert "[counterfactual] up to date" in result.output
    assert "[samples] up to date" in result.output  # the strips under samples/ are no damage
    verified = invoke("verify", run)
    assert verified.exit_code == 0, verified.output


def test_without_the_stage_results_have_no_section_and_the_report_says_why(tmp_path_factory
                                                                          ) -> None:
    run = shared_run(tmp_path_factory, "tiny")
    assert "counterfactual" not in json.loads((run / "results.json").read_text())
    assert "the counterfactual test was not run" in (run / "report.html").read_text()


def test_the_python_api_gives_the_effects_as_a_table(cf_run, tmp_path_factory) -> None:
    from audit.api.results import AuditResults

    run, _, _ = cf_run
    frame = AuditResults.from_run(run).counterfactual
    section = json.loads((run / "results.json").read_text())["counterfactual"]
    assert list(frame["concept"]) == [r["concept"] for r in section["directions"]]
    assert list(frame["effect"]) == [r["effect"]["value"] for r in section["directions"]]
    assert list(frame["ci_low"]) == [r["effect"]["ci"][0] for r in section["directions"]]
    assert frame["n"].dtype == "Int64" and frame["significant"].dtype == bool
    empty = AuditResults.from_run(shared_run(tmp_path_factory, "tiny")).counterfactual
    assert empty.empty and list(empty.columns) == list(frame.columns)


def test_a_conditional_generator_keeps_each_latents_class_along_its_edit(tmp_path) -> None:
    """Each edited latent is generated, and scored, with the class the audit would draw for
    it (class_sampling: uniform), the same at every step of its edit."""
    import types

    from test_conditional import NETS

    from audit.config import CounterfactualSettings, GeneratorConfig
    from audit.counterfactual import edit_latents, read_edits
    from audit.insight.run import InsightRun
    from audit.load import image_seed, load_generator
    from audit.measure.counterfactual import Direction

    (tmp_path / "class_nets.py").write_text(NETS)
    g = GeneratorConfig(spec=f"python:{tmp_path / 'class_nets.py'}:ClassG", n=6, seed=4,
                        class_sampling="uniform", batch_size=4)
    run = InsightRun.__new__(InsightRun)
    run.cfg = types.SimpleNamespace(generator=g)
    run.generator = load_generator(g)
    given: list[list[int]] = []

    def read_images(images, classes):  # what the discriminator would be given
        given.append(list(classes))
        return {"c": np.full((len(images), 2), 0.5)}, images.mean(dim=(1, 2, 3)).numpy()

    run.read_images = read_images
    settings = CounterfactualSettings(enabled=True, n=5, steps=4, seed=9)
    z0, classes = edit_latents(run, settings)
    expected = [image_seed(9, g.n + i) % 3 for i in range(5)]  # after the 6 audited latents
    assert classes == expected
    direction = Direction(vector=np.eye(4)[0], logit_per_unit=1.0, r2=1.0, n=10)
    _, scores, _ = read_edits(run, z0, classes, direction, settings, keep=0)
    per_step = [k for k in expected for _ in range(4)]
    assert [k for batch in given for k in batch] == per_step
    np.testing.assert_allclose(scores, [(k - 1) / 2 for k in per_step], atol=1e-6)


def test_the_measure_command_measures_the_edits_too(cf_run) -> None:
    run, config, _ = cf_run
    before = json.loads((run / "results.json").read_text())["counterfactual"]
    result = invoke("measure", config)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "results.json").read_text())["counterfactual"] == before


def test_the_concepts_to_test_are_checked_against_the_concept_set() -> None:
    from audit.concepts import load_concept_set
    from audit.config import CounterfactualSettings
    from audit.counterfactual import counterfactual_concepts, directions_to_test
    from audit.errors import ConfigError

    cs = load_concept_set("digits_tone")
    every = counterfactual_concepts(CounterfactualSettings(enabled=True), cs)
    assert [c.name for c in every] == [c.name for c in cs.protected]
    chosen = counterfactual_concepts(CounterfactualSettings(concepts=["stroke", "stroke"]), cs)
    assert [c.name for c in chosen] == ["stroke"]
    digit = next(c for c in cs.concepts if c.name == "digit")
    assert directions_to_test(digit) == list(digit.groups)  # one-of-K: each group vs rest
    assert directions_to_test(chosen[0]) == ["thick"]        # binary: the positive group
    unprotected = cs.model_copy(update={"concepts": tuple(
        c.model_copy(update={"protected": False}) for c in cs.concepts)})
    with pytest.raises(ConfigError, match="protects no concept"):
        counterfactual_concepts(CounterfactualSettings(enabled=True), unprotected)
