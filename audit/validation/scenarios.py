"""The audit checks itself: planted-bias scenarios on held-out real digits.

Every image of the demo's *audit* part (held-out real digits, never seen by the
decoders, which train on the *paired* part) is rendered in all four tone x stroke
variants, passed once through the discriminator and decoded once. A scenario then
plants a truth by choosing rows of that bank: a reference set (source ``real``, true
labels known) with one share of a group, and an audited set (source ``generated``,
no labels) with another. Each seeded replicate resamples rows and runs the measure
stage (:func:`audit.measure.predictions_to_results`) exactly as an audit would, and
its conclusions are compared with the planted truth::

    bank = scenario_bank(discriminator="builtin:digits-dcgan")
    result = run_scenario(bank, Scenario("gap", reference_share=0.5, audited_share=0.4),
                          replicates=100)
    result.fire_rate, result.corrected_mae, result.coverage

A replicate's audited set is, by default, a random sample of a generator whose true
share of the group is ``audited_share`` (each image belongs to the group with that
probability: ``draw="binomial"``), which is what the audit's intervals are about;
``draw="exact"`` plants the share exactly instead. Decoder errors can be planted too
(``decoder_errors``): each replicate then flips the decoded group of each image with
the given probability per true group, on the audited images and on the decoders'
held-out test images alike, so the confusion matrix that corrects the shares is
counted as in a real run.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from audit.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from audit.concepts import ConceptSet
    from audit.config import DecoderSettings, DiscriminatorConfig, MeasureSettings

__all__ = ["Scenario", "ScenarioBank", "Replicate", "ScenarioResult", "scenario_bank",
           "replicate_predictions", "results_to_replicate", "run_scenario",
           "standard_scenarios", "extra_scenarios", "summarize", "summary_line",
           "DEFAULT_DISCRIMINATOR"]

DEFAULT_DISCRIMINATOR = "builtin:digits-dcgan"
#: The two planted concepts of ``digits_tone`` and their groups (code 0, code 1).
PLANTED_CONCEPTS: dict[str, tuple[str, str]] = {"tone": ("light", "dark"),
                                                "stroke": ("thin", "thick")}
#: Background share of the second group of the concept that a scenario does not plant
#: (the demo's real-world mix: 20% dark tone, 30% thick stroke).
BACKGROUND: dict[str, float] = {"tone": 0.2, "stroke": 0.3}
#: Planted errors of a weak decoder: share of each true group read as the other group.
WEAK_DECODER: dict[str, dict[str, float]] = {"tone": {"dark": 0.15, "light": 0.05},
                                             "stroke": {"thick": 0.15, "thin": 0.05}}


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """A planted truth: the share of one group among reference and audited images.

    Attributes
    ----------
    name
        Label in printouts.
    concept, group
        The planted concept (``tone`` or ``stroke``) and the group whose share is set.
    reference_share, audited_share
        Share of ``group`` among the reference (real) and the audited (generated)
        images, in [0, 1]. ``audited_share < reference_share`` plants an
        under-representation of ``group``; equal shares plant none.
    n_reference, n_audited
        Images in each set.
    other_share
        Share of the second group (``dark`` / ``thick``) of the concept not planted,
        the same in both sets; default :data:`BACKGROUND`.
    decoder_errors
        ``{true group: probability}`` that the planted concept's decoder reads an image
        of that group as the other group, on top of its own errors; empty: the trained
        decoders as they are.
    draw
        ``binomial``: each image is in ``group`` with probability equal to the share
        (a random sample of a population with that share; the truth is the population
        share). ``exact``: exactly ``round(n * share)`` images are.
    """

    name: str
    concept: str = "tone"
    group: str = "dark"
    reference_share: float = 0.5
    audited_share: float = 0.4
    n_reference: int = 2000
    n_audited: int = 2000
    other_share: float | None = None
    decoder_errors: Mapping[str, float] = field(default_factory=dict)
    draw: Literal["binomial", "exact"] = "binomial"

    def __post_init__(self) -> None:
        groups = PLANTED_CONCEPTS.get(self.concept)
        if groups is None:
            raise ConfigError(f"scenario {self.name!r}: concept {self.concept!r} cannot be "
                              f"planted; use one of {sorted(PLANTED_CONCEPTS)}.")
        if self.group not in groups:
            raise ConfigError(f"scenario {self.name!r}: {self.concept} has groups "
                              f"{list(groups)}, not {self.group!r}.")
        shares = {"reference_share": self.reference_share, "audited_share": self.audited_share,
                  "other_share": self.other_share, **{f"decoder_errors[{g}]": r for g, r in
                                                      self.decoder_errors.items()}}
        for key, value in shares.items():
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"scenario {self.name!r}: {key}={value} must be a share in "
                                  f"[0, 1].")
        bad = sorted(set(self.decoder_errors) - set(groups))
        if bad:
            raise ConfigError(f"scenario {self.name!r}: decoder_errors names group(s) {bad}; "
                              f"{self.concept} has {list(groups)}.")
        if self.n_reference < 1 or self.n_audited < 1:
            raise ConfigError(f"scenario {self.name!r}: n_reference and n_audited must be at "
                              f"least 1.")
        if self.draw not in ("binomial", "exact"):
            raise ConfigError(f"scenario {self.name!r}: draw={self.draw!r}; use 'binomial' or "
                              f"'exact'.")

    @property
    def planted(self) -> bool:
        """Whether an under-representation of ``group`` is planted."""
        return self.audited_share < self.reference_share

    @property
    def finding_id(self) -> str:
        """The id of the finding that reports this group under-represented."""
        return f"F-REP-{self.concept}-{self.group}"

    @property
    def test_id(self) -> str:
        """The id of the share test of this group."""
        return f"T-REP-{self.concept}-{self.group}"


def standard_scenarios(*, n: int = 2000, gap: float = 0.10) -> list[Scenario]:
    """The scenarios behind the headline figures.

    For tone (dark: 50% among real images) and stroke (thick: 50%): a planted gap of
    ``gap`` (the audited share is 50% - gap) and no gap, each with the trained decoders
    and with a weak decoder (:data:`WEAK_DECODER`), ``n`` images per set.
    """
    out = []
    for concept, group in (("tone", "dark"), ("stroke", "thick")):
        for errors, suffix in (({}, ""), (WEAK_DECODER[concept], "+weak-decoder")):
            for audited, kind in ((0.5 - gap, f"gap{round(100 * gap)}"), (0.5, "null")):
                out.append(Scenario(f"{concept}-{kind}{suffix}", concept=concept, group=group,
                                    reference_share=0.5, audited_share=audited,
                                    n_reference=n, n_audited=n, decoder_errors=errors))
    return out


def extra_scenarios(*, n: int = 2000) -> list[Scenario]:
    """Scenarios that explain the headline: a 5-point gap (the size of the finding
    rule's ``under_margin``), and the 10-point gap with exactly planted shares."""
    return [
        Scenario("tone-gap5", reference_share=0.5, audited_share=0.45, n_reference=n,
                 n_audited=n),
        Scenario("tone-gap10-exact", reference_share=0.5, audited_share=0.4, n_reference=n,
                 n_audited=n, draw="exact"),
    ]


# ---------------------------------------------------------------- the bank


@dataclass(frozen=True)
class ScenarioBank:
    """Every audit-part digit in every variant, decoded once.

    Attributes
    ----------
    table
        4 M rows (M audit-part digits): row ``v * M + i`` is digit ``i`` in variant
        ``v = 2 * dark + thick``. Columns ``image_id``, ``digit``, ``tone``, ``stroke``
        (true groups), ``score`` (the discriminator's logit), ``prob__*`` and ``pred__*``
        (decoded, docs/ARCHITECTURE.md).
    heldout
        The decoders' held-out test images (paired part): ``true__<concept>`` and
        ``pred__<concept>`` per concept.
    validity
        The decoders' ``validity.json`` document.
    concept_set
        ``digits_tone``.
    discriminator, model_sha256
        Spec and state hash of the discriminator.
    """

    table: pd.DataFrame
    heldout: pd.DataFrame
    validity: dict[str, Any]
    concept_set: ConceptSet
    discriminator: str
    model_sha256: str

    @property
    def n_digits(self) -> int:
        """M, the number of audit-part digits."""
        return len(self.table) // 4


def _render_variants(images: np.ndarray) -> tuple[Any, pd.DataFrame]:
    """All four variants of M digits (M x 8 x 8, 0..16): 4M x 1 x 32 x 32 and their
    tone/stroke labels, variant-major (row ``v * M + i``, ``v = 2 * dark + thick``)."""
    import pandas as pd
    import torch

    from audit.demo.data import render

    parts, tones, strokes = [], [], []
    for v in range(4):
        tone = PLANTED_CONCEPTS["tone"][v // 2]
        stroke = PLANTED_CONCEPTS["stroke"][v % 2]
        parts.append(render(images, tone=tone, stroke=stroke))  # type: ignore[arg-type]
        tones += [tone] * len(images)
        strokes += [stroke] * len(images)
    return torch.cat(parts), pd.DataFrame({"tone": tones, "stroke": strokes})


def _audit_part_variants() -> tuple[Any, pd.DataFrame]:
    """The demo's audit part in all four variants: 4M x 1 x 32 x 32 images and their
    table (``image_id``, ``digit``, ``tone``, ``stroke``), variant-major."""
    from sklearn.datasets import load_digits

    from audit.demo.data import digits_split

    index = digits_split()["audit"]
    digits = load_digits()
    images, table = _render_variants(digits.images[index])
    table.insert(0, "image_id", [f"digits-audit-{i:05d}-{t}-{s}" for i, t, s in
                                 zip(np.tile(index, 4), table["tone"], table["stroke"],
                                     strict=True)])
    table.insert(1, "digit", np.tile(digits.target[index], 4).astype(str))
    return images, table


def _images_to_features(model: Any, layers: Any, cfg: DiscriminatorConfig, images: Any, *,
                        out: Path, device: str) -> tuple[dict[str, np.ndarray], np.ndarray, Any]:
    """Extract ``images`` (N x C x H x W) into a store at ``out``: the pooled features per
    layer ({layer: N x D}), the scores (N,) and the store's settings."""
    from audit.decode.run import store_features
    from audit.extract import extract

    store = extract(model, layers, images, out=out, pooling=cfg.pooling,
                    batch_size=cfg.batch_size, device=device, max_dim=cfg.max_dim,
                    progress=False, include_batch_dependent=cfg.include_batch_dependent)
    return store_features(store), np.asarray(store.scores()), store.settings


def _heldout_predictions(bundle: Any, paired_x: dict[str, np.ndarray],
                         paired_labels: pd.DataFrame, concept_set: ConceptSet,
                         source: dict[str, Any]) -> pd.DataFrame:
    """The decoders' held-out test images (paired part, bundle's ``test`` split):
    ``true__<concept>`` and ``pred__<concept>`` per concept."""
    import pandas as pd

    from audit.decode import decode

    test = set(bundle.splits["test"])
    rows = np.flatnonzero(paired_labels["image_id"].astype(str).isin(test).to_numpy())
    paired_decoded = decode(bundle, {k: v[rows] for k, v in paired_x.items()}, **source)
    return pd.DataFrame({
        **{f"true__{c}": paired_labels[c].to_numpy()[rows] for c in concept_set.names},
        **{f"pred__{c}": paired_decoded[f"pred__{c}"].to_numpy() for c in concept_set.names},
    })


def scenario_bank(*, discriminator: str | DiscriminatorConfig = DEFAULT_DISCRIMINATOR,
                  decoders: DecoderSettings | None = None, seed: int = 0,
                  device: str = "cpu") -> ScenarioBank:
    """Train decoders on the paired part and decode every audit-part digit variant once.

    Parameters
    ----------
    discriminator
        A model spec or the config section (its layers, pooling and batch size are
        used). A ``python:`` spec without weights gets random weights seeded by ``seed``.
    decoders
        Decoder training settings (default: the demo config's, which keeps the variants of
        one digit in one split).
    seed
        Seed of random model weights, if any.
    device
        ``cpu``, ``cuda``, ``mps`` or ``auto``.

    Returns
    -------
    ScenarioBank
    """
    import tempfile
    from pathlib import Path

    import pandas as pd
    import torch

    from audit.concepts import load_concept_set
    from audit.config import DiscriminatorConfig
    from audit.decode import activations_to_decoders, decode
    from audit.demo.data import builtin_source
    from audit.extract import resolve_layers
    from audit.load import load_discriminator

    cfg = discriminator if isinstance(discriminator, DiscriminatorConfig) else \
        DiscriminatorConfig(spec=discriminator)
    concept_set = load_concept_set("digits_tone")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = load_discriminator(cfg, device=device)
    layers = resolve_layers(model, cfg.layers, include_batch_dependent=cfg.include_batch_dependent)
    paired_images, paired_labels = builtin_source("digits-paired")
    audit_images, table = _audit_part_variants()
    with tempfile.TemporaryDirectory(prefix="gan-audit-scenarios-") as tmp:
        paired_x, _, settings = _images_to_features(model, layers, cfg, paired_images,
                                                    out=Path(tmp) / "paired", device=device)
        audit_x, scores, _ = _images_to_features(model, layers, cfg, audit_images,
                                                 out=Path(tmp) / "audit", device=device)
    source = {"model_sha256": settings.model_sha256, "pooling": settings.pooling}
    if decoders is None:  # as the demo trains them (variants of one digit in one split)
        from audit.config import load_config
        from audit.pipeline import demo_config

        decoders = load_config(demo_config()).decoders
    bundle = activations_to_decoders(paired_x, paired_labels, concept_set, settings=decoders,
                                     device=device, **source)
    table = pd.concat([table, decode(bundle, audit_x, scores, **source)], axis=1)
    return ScenarioBank(table=table,
                        heldout=_heldout_predictions(bundle, paired_x, paired_labels,
                                                     concept_set, source),
                        validity=bundle.validity, concept_set=concept_set,
                        discriminator=cfg.spec, model_sha256=settings.model_sha256)


# ---------------------------------------------------------------- one replicate


def _flags(n: int, share: float, draw: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool: True with probability ``share`` (binomial) or exactly round(n * share)."""
    if draw == "exact":
        from audit.demo.data import _exact_assignment

        return _exact_assignment(n, share, rng)
    return rng.random(n) < share


def _codes(values: np.ndarray, groups: tuple[str, str]) -> np.ndarray:
    return (np.asarray(values, dtype=object) == groups[1]).astype(np.int64)


def _flip(true: np.ndarray, pred: np.ndarray, rates: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """Binary decoded codes with each row flipped with probability ``rates[true]``."""
    return np.where(rng.random(len(true)) < rates[true], 1 - pred, pred)


def _planted_validity(bank: ScenarioBank, scenario: Scenario, rates: np.ndarray,
                      rng: np.random.Generator) -> dict[str, Any]:
    """validity.json of the decoders with the scenario's errors added: the planted
    concept's confusion counts, accuracies and group accuracies recounted on the held-out
    test images after flipping their decoded groups."""
    from audit.decode.metrics import accuracy, balanced_accuracy, confusion_counts

    c, groups = scenario.concept, PLANTED_CONCEPTS[scenario.concept]
    h = bank.heldout
    known = h[f"true__{c}"].notna().to_numpy()
    true = _codes(h[f"true__{c}"].to_numpy()[known], groups)
    pred = _flip(true, _codes(h[f"pred__{c}"].to_numpy()[known], groups), rates, rng)
    validity = copy.deepcopy(bank.validity)
    entry = validity["concepts"][c]
    entry.update({"confusion": confusion_counts(true, pred, 2).tolist(),
                  "accuracy": accuracy(true, pred),
                  "balanced_accuracy": balanced_accuracy(true, pred)})
    for other, accs in (entry.get("group_accuracy") or {}).items():
        codes = h[f"true__{other}"].to_numpy()[known]
        for g in accs:
            inside = codes == g
            accs[g] = accuracy(true[inside], pred[inside]) if inside.any() else None
    return validity


def replicate_predictions(bank: ScenarioBank, scenario: Scenario, rng: np.random.Generator
                          ) -> tuple[pd.DataFrame, dict[str, Any], float]:
    """One replicate's audit table and decoder validity.

    Digits are drawn uniformly with replacement from the audit part; each row's variant
    follows the scenario's shares.

    Returns
    -------
    predictions
        ``n_reference`` rows with source ``real`` and true labels, then ``n_audited``
        rows with source ``generated`` and no labels; split ``audit``; columns as in
        ``predictions.parquet`` (docs/ARCHITECTURE.md).
    validity
        The bank's validity, or with planted decoder errors its recounted version.
    sample_share
        The share of ``scenario.group`` among the audited rows actually drawn.
    """
    import pandas as pd

    c = scenario.concept
    groups = PLANTED_CONCEPTS[c]
    other = next(k for k in PLANTED_CONCEPTS if k != c)
    in_group = groups.index(scenario.group)
    other_share = BACKGROUND[other] if scenario.other_share is None else scenario.other_share
    m = bank.n_digits
    parts, picked = [], []
    for source, n, share in (("real", scenario.n_reference, scenario.reference_share),
                             ("generated", scenario.n_audited, scenario.audited_share)):
        planted = np.where(_flags(n, share, scenario.draw, rng), in_group, 1 - in_group)
        background = _flags(n, other_share, scenario.draw, rng).astype(np.int64)
        dark, thick = (planted, background) if c == "tone" else (background, planted)
        rows = (2 * dark + thick) * m + rng.integers(m, size=n)
        part = bank.table.iloc[rows].reset_index(drop=True)
        part["image_id"] = [f"{source}-{i:05d}-{x}" for i, x in enumerate(part["image_id"])]
        part.insert(1, "split", "audit")
        part.insert(2, "source", source)
        for name in bank.concept_set.names:
            part[f"true__{name}"] = part[name] if source == "real" else None
        parts.append(part.drop(columns=["digit", "tone", "stroke"]))
        picked.append(rows)
    predictions = pd.concat(parts, ignore_index=True)
    true = _codes(bank.table[c].to_numpy()[np.concatenate(picked)], groups)
    sample_share = float(np.mean(true[scenario.n_reference:] == in_group))
    if not scenario.decoder_errors:
        return predictions, bank.validity, sample_share
    rates = np.array([float(scenario.decoder_errors.get(g, 0.0)) for g in groups])
    pred = _flip(true, _codes(predictions[f"pred__{c}"].to_numpy(), groups), rates, rng)
    flipped = pred != _codes(predictions[f"pred__{c}"].to_numpy(), groups)
    predictions[f"pred__{c}"] = np.asarray(groups, dtype=object)[pred]
    p0, p1 = (predictions[f"prob__{c}__{g}"].to_numpy() for g in groups)
    predictions[f"prob__{c}__{groups[0]}"] = np.where(flipped, p1, p0)
    predictions[f"prob__{c}__{groups[1]}"] = np.where(flipped, p0, p1)
    return predictions, _planted_validity(bank, scenario, rates, rng), sample_share


# ---------------------------------------------------------------- conclusions vs truth


@dataclass(frozen=True)
class Replicate:
    """What one audit concluded about the scenario's group, next to the truth.

    Attributes
    ----------
    truth
        The planted share of the group among audited images (the population share).
    sample_share
        Its share among the audited images drawn in this replicate.
    reference
        The reference share the audit compared with (real images, true labels).
    raw, corrected
        The audit's generated share as decoded, and corrected for decoder error.
    ci, gap_ci
        95% intervals (at the settings' ``alpha``) of the corrected share and of the
        gap = corrected - reference.
    severity
        Severity of the group's under-representation finding, None when it did not fire.
    p_value, p_holm
        The group's share test, before and after Holm correction.
    significant
        ``p_holm < alpha`` with the decoded generated share below the decoded real share.
    other_fires
        The concept's other group got an under-representation finding.
    """

    truth: float
    sample_share: float
    reference: float
    raw: float
    corrected: float
    ci: tuple[float, float]
    gap_ci: tuple[float, float]
    severity: str | None
    p_value: float | None
    p_holm: float | None
    significant: bool
    other_fires: bool

    @property
    def fires(self) -> bool:
        """The under-representation finding fired (any severity above info)."""
        return self.severity in ("low", "medium", "high")

    @property
    def covered(self) -> bool:
        """The corrected share's interval holds the truth."""
        return self.ci[0] <= self.truth <= self.ci[1]

    @property
    def gap_below_zero(self) -> bool:
        """The corrected gap's interval lies entirely below 0."""
        return self.gap_ci[1] < 0


def results_to_replicate(results: dict[str, Any], scenario: Scenario, *, sample_share: float,
                         alpha: float = 0.05) -> Replicate:
    """Read a results.json document's conclusions about ``scenario.group``."""
    section = next(s for s in results["representation"] if s["concept"] == scenario.concept)
    row = next(r for r in section["rows"] if r["group"] == scenario.group)
    findings = {f["id"]: f for f in results["findings"]}
    test = next((t for t in results["tests"] if t["id"] == scenario.test_id), {})
    counts = test.get("counts") or {}
    lower = bool(counts.get("n1") and counts.get("n2")
                 and counts["k1"] / counts["n1"] < counts["k2"] / counts["n2"])
    p_holm = test.get("p_holm")
    other = next(g for g in PLANTED_CONCEPTS[scenario.concept] if g != scenario.group)
    finding = findings.get(scenario.finding_id)
    return Replicate(
        truth=float(scenario.audited_share), sample_share=float(sample_share),
        reference=float("nan") if row["reference_share"] is None else
        float(row["reference_share"]),
        raw=float(row["generated_raw"]["value"]),
        corrected=float(row["generated_corrected"]["value"]),
        ci=tuple(map(float, row["generated_corrected"]["ci"])),  # type: ignore[arg-type]
        gap_ci=tuple(map(float, row["gap"]["ci"])),  # type: ignore[arg-type]
        severity=None if finding is None else finding["severity"],
        p_value=test.get("p_value"), p_holm=p_holm,
        significant=bool(p_holm is not None and p_holm < alpha and lower),
        other_fires=f"F-REP-{scenario.concept}-{other}" in findings)


def _rate(flags: np.ndarray) -> tuple[float, float]:
    """Share of True and its Monte Carlo standard error sqrt(p (1 - p) / R)."""
    r = len(flags)
    p = float(np.mean(flags)) if r else float("nan")
    return p, float(np.sqrt(p * (1 - p) / r)) if r else float("nan")


def _mean(values: np.ndarray) -> tuple[float, float]:
    """Mean and its Monte Carlo standard error sd / sqrt(R)."""
    r = len(values)
    if r == 0:
        return float("nan"), float("nan")
    se = float(np.std(values, ddof=1) / np.sqrt(r)) if r > 1 else float("nan")
    return float(np.mean(values)), se


@dataclass(frozen=True)
class ScenarioResult:
    """Every replicate of one scenario, and its figures with Monte Carlo errors."""

    scenario: Scenario
    replicates: tuple[Replicate, ...]

    def _flags(self, attr: str) -> np.ndarray:
        return np.array([getattr(r, attr) for r in self.replicates], dtype=bool)

    def _errors(self, attr: str) -> np.ndarray:
        return np.array([abs(getattr(r, attr) - r.truth) for r in self.replicates])

    def figures(self) -> dict[str, tuple[float, float]]:
        """``{name: (value, Monte Carlo standard error)}``: ``fires`` (the finding fired),
        ``significant`` (Holm-significant share test, right direction), ``gap_below_zero``
        (the corrected gap's interval excludes 0), ``other_fires``, ``coverage``,
        ``corrected_mae``, ``raw_mae`` (shares as fractions)."""
        out = {name: _rate(self._flags(name)) for name in
               ("fires", "significant", "gap_below_zero", "other_fires")}
        out["coverage"] = _rate(self._flags("covered"))
        out["corrected_mae"] = _mean(self._errors("corrected"))
        out["raw_mae"] = _mean(self._errors("raw"))
        out["mean_corrected"] = _mean(np.array([r.corrected for r in self.replicates]))
        return out


def run_scenario(bank: ScenarioBank, scenario: Scenario, *, replicates: int, seed: int = 0,
                 settings: MeasureSettings | None = None) -> ScenarioResult:
    """Audit ``replicates`` seeded draws of a scenario with the full measure stage.

    Parameters
    ----------
    bank
        From :func:`scenario_bank`.
    scenario
        The planted truth.
    replicates
        Number of replicates; replicate ``r`` draws its images and then its bootstrap
        seed from the seed sequence ``(seed, crc32(scenario.name), r)``, so no two
        replicates (of this or another scenario) share a bootstrap stream.
    seed
        Base seed.
    settings
        Measure settings (default :class:`~audit.config.MeasureSettings`).

    Returns
    -------
    ScenarioResult
    """
    from audit.config import MeasureSettings
    from audit.measure import predictions_to_results

    settings = settings or MeasureSettings()
    key = zlib.crc32(scenario.name.encode("utf-8"))
    out = []
    for r in range(replicates):
        rng = np.random.default_rng([seed, key, r])
        predictions, validity, share = replicate_predictions(bank, scenario, rng)
        results = predictions_to_results(
            predictions, bank.concept_set, validity,
            settings=settings.model_copy(update={"seed": int(rng.integers(2 ** 31))}))
        out.append(results_to_replicate(results, scenario, sample_share=share,
                                        alpha=settings.alpha))
    return ScenarioResult(scenario=scenario, replicates=tuple(out))


def summarize(results: list[ScenarioResult]) -> dict[str, tuple[float, float, int]]:
    """Headline figures pooled over scenarios: ``{name: (value, MC standard error, R)}``.

    ``detection``: the finding fired, over replicates of scenarios with a planted gap;
    ``false_alarm``: it fired, over scenarios without; ``corrected_mae``, ``raw_mae`` and
    ``coverage`` over every replicate.
    """
    planted = [r for s in results if s.scenario.planted for r in s.replicates]
    null = [r for s in results if not s.scenario.planted for r in s.replicates]
    every = [r for s in results for r in s.replicates]
    if not every:
        raise ValueError("summarize needs at least one replicate")
    pooled = ScenarioResult(scenario=results[0].scenario, replicates=tuple(every)).figures()

    def rate(reps: list[Replicate]) -> tuple[float, float, int]:
        return (*_rate(np.array([r.fires for r in reps], dtype=bool)), len(reps))

    return {"detection": rate(planted), "false_alarm": rate(null),
            "corrected_mae": (*pooled["corrected_mae"], len(every)),
            "raw_mae": (*pooled["raw_mae"], len(every)),
            "coverage": (*pooled["coverage"], len(every))}


def summary_line(summary: Mapping[str, tuple[float, ...]]) -> str:
    """``detection=0.97 false_alarm=0.04 corrected_mae=0.008 raw_mae=0.031 coverage=0.95``."""
    return (f"detection={summary['detection'][0]:.2f} "
            f"false_alarm={summary['false_alarm'][0]:.2f} "
            f"corrected_mae={summary['corrected_mae'][0]:.3f} "
            f"raw_mae={summary['raw_mae'][0]:.3f} coverage={summary['coverage'][0]:.2f}")
