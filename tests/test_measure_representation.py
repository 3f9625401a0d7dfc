"""Representation's bootstrap statistic by its named columns, against shares counted with
pandas and distances from scipy, on rows drawn at random."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.measure.groups import SHARE_PARTS, CellLayout
from audit.measure.representation import representation_columns, representation_statistic


@pytest.mark.parametrize("reference", ["real", "uniform"])
def test_representation_columns_match_shares_counted_on_the_rows(reference: str) -> None:
    from scipy.spatial.distance import euclidean
    from scipy.stats import entropy

    rng = np.random.default_rng(3)
    g, n = 3, 3000
    source = rng.integers(0, 2, n)
    group = np.where(source == 0, rng.choice(g + 1, n, p=[0.4, 0.3, 0.25, 0.05]),
                     rng.choice(g + 1, n, p=[0.6, 0.25, 0.1, 0.05]))
    unlabelled = rng.random(n) < 0.5
    layout = CellLayout(n_groups=g, confusion_sizes=(), n_parts=len(SHARE_PARTS), n_states=1)
    cells = np.bincount((2 * source + unlabelled) * (g + 1) + group, minlength=layout.n_audit)
    stat = representation_statistic(layout, reference=reference, correct=False)
    columns = representation_columns(g)
    values = columns.unpack(stat(cells[None, :])[0])
    assert columns.size == 4 * g + 6

    known = pd.DataFrame({"source": source, "group": group})
    known = known[known["group"] < g]
    shares = known.groupby("source")["group"].value_counts(normalize=True).unstack().to_numpy()
    real, generated = shares[0], shares[1]
    ref = real if reference == "real" else np.full(g, 1 / g)
    assert values["real"] == pytest.approx(real, abs=1e-12)
    assert values["generated_raw"] == pytest.approx(generated, abs=1e-12)
    assert values["generated_corrected"] == pytest.approx(generated, abs=1e-12)  # no A
    assert values["gap"] == pytest.approx(generated - ref, abs=1e-12)
    for kind in ("distance_raw", "distance_corrected"):
        l1, l2, kl = values[kind]
        assert l1 == pytest.approx(np.abs(generated - ref).sum(), abs=1e-12)
        assert l2 == pytest.approx(euclidean(generated, ref), abs=1e-12)
        assert kl == pytest.approx(entropy(generated, ref), abs=1e-9)
