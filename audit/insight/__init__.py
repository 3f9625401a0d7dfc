"""What the discriminator knows, beyond the bias verdicts.

Views of a finished audit, each pure in the middle and written to ``RUN_DIR/insight/``
by :mod:`audit.insight.run`:

- latent interpolation (:mod:`~audit.insight.interpolate`): every concept's decoded
  probability along a path between two latents;
- failure diagnosis (:mod:`~audit.insight.diagnose`): the images D rejects most and the
  groups over-represented among them, with intervals;
- layer redundancy (:mod:`~audit.insight.redundancy`): linear CKA between layers and the
  layers an earlier one already reaches;
- mode collapse (:mod:`~audit.insight.entropy`): per-concept entropy, generated against real;
- decoder training curves (:mod:`~audit.insight.curves`), optionally to TensorBoard.

::

    from audit.insight import insight_for_run
    insight_for_run(run_dir)          # after measure, before the report
"""

from __future__ import annotations

from audit.insight.curves import TrainingCurves, curves_to_tensorboard, decoder_curves
from audit.insight.diagnose import Diagnosis, predictions_to_diagnosis
from audit.insight.entropy import ConceptEntropy, predictions_to_entropy
from audit.insight.interpolate import Interpolation, interpolate_concepts, latent_path
from audit.insight.redundancy import Redundancy, layers_to_redundancy, linear_cka
from audit.insight.run import diagnose_run, insight_for_run, interpolate_run

__all__ = ["insight_for_run", "interpolate_run", "diagnose_run", "latent_path",
           "interpolate_concepts", "Interpolation", "predictions_to_diagnosis", "Diagnosis",
           "linear_cka", "layers_to_redundancy", "Redundancy", "predictions_to_entropy",
           "ConceptEntropy", "decoder_curves", "curves_to_tensorboard", "TrainingCurves"]
