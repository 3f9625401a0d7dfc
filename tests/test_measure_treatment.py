"""Treatment's named pieces against independent references: score states against the
comparisons they stand for, the bootstrap statistic's named columns against Fairlearn's
disparity metrics and pandas on the rows, the shared helpers against their definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.measure.bootstrap import Columns
from audit.measure.groups import (
    ABOVE_MEDIAN_STATES,
    ACCEPTED_STATES,
    N_STATES,
    VALID_STATES,
    CellLayout,
    ScoreState,
    score_states,
)
from audit.measure.stats import EffectiveCounts, effective_counts, finite_or_none
from audit.measure.treatment import (
    RATE_METRICS,
    StateCounts,
    treatment_columns,
    treatment_statistic,
)


def test_score_states_name_the_two_comparisons() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1, 500)
    scores[::17] = np.nan
    scores[5] = np.inf
    median, threshold = 0.3, -0.2
    states = score_states(scores, median, threshold)
    finite = np.isfinite(scores)
    with np.errstate(invalid="ignore"):
        above, accepted = scores > median, scores > threshold
    assert np.array_equal(states == ScoreState.INVALID, ~finite)
    assert np.array_equal(np.isin(states, VALID_STATES), finite)
    assert np.array_equal(np.isin(states, ACCEPTED_STATES), finite & accepted)
    assert np.array_equal(np.isin(states, ABOVE_MEDIAN_STATES), finite & above)
    assert N_STATES == len(ScoreState) == 5
    # Every combination of the two comparisons has a state of its own.
    both = {(a, b): set(states[finite & (above == a) & (accepted == b)]) for a in (False, True)
            for b in (False, True)}
    assert all(len(v) == 1 for v in both.values() if v)


def _rows_and_cells(seed: int, n_groups: int = 3, n: int = 4000):
    """Random audited rows (source, group incl. unknown, score state) and their cells."""
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 2, n)
    group = rng.choice(n_groups + 1, n, p=[0.4, 0.3, 0.25, 0.05][:n_groups + 1])
    p_accept = np.where(source == 0, 0.7, 0.35) - 0.1 * group
    accepted = rng.random(n) < p_accept
    above = rng.random(n) < 0.5
    state = np.where(accepted, np.where(above, ScoreState.ABOVE_MEDIAN_ACCEPTED,
                                        ScoreState.BELOW_MEDIAN_ACCEPTED),
                     np.where(above, ScoreState.ABOVE_MEDIAN, ScoreState.BELOW_MEDIAN))
    state[rng.random(n) < 0.03] = ScoreState.INVALID
    rows = pd.DataFrame({"source": source, "group": group, "state": state,
                         "accepted": accepted, "above": above})
    layout = CellLayout(n_groups=n_groups, confusion_sizes=())
    cells = np.bincount((source * (n_groups + 1) + group) * N_STATES + state,
                        minlength=layout.n_audit)
    return rows, layout, cells


def test_state_counts_count_the_rows() -> None:
    rows, layout, cells = _rows_and_cells(1)
    states = StateCounts.of(layout.audit(cells[None, :])[0])
    valid = rows[rows["state"] != ScoreState.INVALID]
    for s in range(2):
        for g in range(4):
            mine = valid[(valid["source"] == s) & (valid["group"] == g)]
            assert states.valid[s, g] == len(mine)
            assert states.accepted[s, g] == mine["accepted"].sum()
            assert states.above_median[s, g] == mine["above"].sum()
            assert states.successes("acceptance_rate")[s, g] == mine["accepted"].sum()
            assert states.successes("scoring_rate")[s, g] == mine["above"].sum()


@pytest.mark.parametrize("seed", range(3))
def test_treatment_statistic_columns_match_fairlearn_and_the_rows(seed: int) -> None:
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    rows, layout, cells = _rows_and_cells(seed)
    g = layout.n_groups
    eligible = np.ones((2, g + 1), dtype=bool)
    eligible[:, g] = False                                  # unknown never the highest
    used = np.array([True] * g + [False])
    stat = treatment_statistic(layout, eligible, used)
    columns = treatment_columns(g)
    values = columns.unpack(stat(cells[None, :])[0])
    assert stat(np.repeat(cells[None, :], 4, axis=0)).shape == (4, columns.size)

    valid = rows[rows["state"] != ScoreState.INVALID]
    for metric, col in zip(RATE_METRICS, ("accepted", "above"), strict=True):
        rate = valid.groupby(["source", "group"])[col].mean().unstack().to_numpy()  # (2, G+1)
        expected = rate / rate[:, :g].max(axis=1, keepdims=True)
        assert values[metric] == pytest.approx(expected, abs=1e-12)

    known = valid[valid["group"] < g]
    args = {"y_true": (known["source"] == 0).astype(int), "y_pred": known["accepted"].astype(int),
            "sensitive_features": known["group"]}
    assert values["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(**args), abs=1e-12)
    assert values["demographic_parity_ratio"] == pytest.approx(
        demographic_parity_ratio(**args), abs=1e-12)
    assert values["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(**args), abs=1e-12)


def test_columns_pack_and_unpack_round_trip() -> None:
    columns = Columns((("a", (2, 3)), ("b", ()), ("c", (4,))))
    rng = np.random.default_rng(0)
    blocks = {"a": rng.random((5, 2, 3)), "b": rng.random(5), "c": rng.random((5, 4))}
    packed = columns.pack(blocks)
    assert packed.shape == (5, columns.size) == (5, 11)
    for name, block in columns.unpack(packed[0]).items():
        assert np.array_equal(block, blocks[name][0])
    ci = np.stack([packed[0], packed[1]], axis=-1)           # (M, 2), as intervals come
    unpacked = columns.unpack(ci)
    assert unpacked["a"].shape == (2, 3, 2) and unpacked["b"].shape == (2,)
    assert np.array_equal(unpacked["c"][:, 1], blocks["c"][1])


def test_finite_or_none_and_named_effective_counts() -> None:
    assert finite_or_none(0.25) == 0.25 and type(finite_or_none(np.float64(1.0))) is float
    assert [finite_or_none(x) for x in (None, np.nan, np.inf, -np.inf)] == [None] * 4
    y, m = np.array([3.0, 0.0, 5.0, 1.0]), np.array([4.0, 2.0, 6.0, 3.0])
    eff = effective_counts(y, m)
    assert isinstance(eff, EffectiveCounts)
    assert eff.successes / eff.images == pytest.approx(y.sum() / m.sum())
    assert eff.images <= m.sum()
