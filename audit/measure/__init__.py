"""The measure stage: from the per-image table to results.json.

Representation (who appears, corrected for decoder error), treatment (how the
discriminator scores each group, through Fairlearn), intervals from a fast
bootstrap, tests corrected for multiple comparisons, findings and verdicts.
"""

from __future__ import annotations

from audit.measure.results import (
                                   SCHEMA_VERSION,
                                   check_schema_version,
                                   measure_run,
                                   predictions_to_results,
                                   results_schema,
                                   results_to_tables,
                                   validate_results,
                                   write_tables,
)

__all__ = ["SCHEMA_VERSION", "predictions_to_results", "measure_run", "results_to_tables",
           "write_tables", "results_schema", "validate_results", "check_schema_version"]
