"""The audit checks itself: planted truths and the harnesses that compare conclusions with them.

One home for everything synthetic, used alike by the tests, the benchmarks
(``benchmarks/validation.py``, ``sanity.py``, ``decoders.py``, ``report.py``) and the
validation figures of docs/VALIDATION.md:

- :mod:`audit.validation.scenarios`: planted-bias scenarios on held-out real demo
  digits; every replicate runs the real measure stage and is scored against the
  planted share (:func:`scenario_bank`, :class:`Scenario`, :func:`run_scenario`).
- :mod:`audit.validation.decoders`: seeded activation stores with planted concepts,
  for the decode stage (:func:`planted_activations`,
  :func:`discriminator_like_activations`, :func:`planted_concept_set`).
- :mod:`audit.validation.predictions`: per-image tables (``predictions`` and
  ``validity``) with planted shares, decoder errors and score shifts, for the measure
  and report stages (:func:`synthetic_predictions`, :class:`Planted`,
  :func:`synthetic_results`).
- :mod:`audit.validation.trends`: planted series of audits over checkpoints (corrected
  shares with bootstrap standard errors), for the trend test
  (:func:`~audit.validation.trends.run_series`, ``benchmarks/trend.py``).

Import rule: the pipeline stages (load, extract, decode, measure, insight, report)
never import this package; only the demo, the benchmarks, the tests and the CLI's
demo and validation commands may. It is not imported by ``import audit``.
"""

from __future__ import annotations

from audit.validation.decoders import (
    discriminator_like_activations,
    planted_activations,
    planted_concept_set,
)
from audit.validation.predictions import (
    DIGITS_PLANTED,
    Planted,
    planted_confusion,
    synthetic_predictions,
    synthetic_results,
)
from audit.validation.scenarios import (
    Replicate,
    Scenario,
    ScenarioBank,
    ScenarioResult,
    extra_scenarios,
    replicate_predictions,
    results_to_replicate,
    run_scenario,
    scenario_bank,
    standard_scenarios,
    summarize,
    summary_line,
)

__all__ = [
    "Scenario", "ScenarioBank", "Replicate", "ScenarioResult", "scenario_bank",
    "replicate_predictions", "results_to_replicate", "run_scenario", "standard_scenarios",
    "extra_scenarios", "summarize", "summary_line",
    "planted_concept_set", "planted_activations", "discriminator_like_activations",
    "Planted", "DIGITS_PLANTED", "planted_confusion", "synthetic_predictions",
    "synthetic_results",
]
