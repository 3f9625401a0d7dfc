"""A fast bootstrap that draws the same distribution as resampling rows.

Rate metrics depend on the rows only through the counts of a few cells (group x
outcome x decision). Resampling N rows with replacement gives cell counts that are
multinomial(N, counts / N), so one multinomial draw per replicate (all replicates in
one vectorised call) replaces re-running the metric on N resampled rows. Stratified
resampling draws each stratum separately with its own fixed size. Continuous scores
(group means) are resampled as rows, in chunks of replicates.

Statistics are functions ``f(cells) -> values`` vectorised over a leading replicate
axis: ``cells`` (B, C) -> (B, ...). The same function gives the point estimate
(``B = 1``), the replicates, and the jackknife that BCa needs.

Clustered images (``cluster_by``: one person's photos, variants of one image) are not
independent; the cluster bootstrap resamples whole clusters instead of rows. With the
cells of each cluster as a (K, C) matrix M, a replicate draws cluster multiplicities
w ~ multinomial(K, 1/K) and its cells are w @ M; means are ratios of such sums; the BCa
jackknife leaves one cluster out at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from audit.measure.stats import finite_or_none

__all__ = ["BootstrapSpec", "Columns", "estimate", "draw_cells", "cell_interval",
           "mean_replicates", "grouped_mean_replicates", "ROW_DRAWS", "NORMAL_FROM",
           "intervals", "jackknife_cells", "jackknife_means", "cluster_cells",
           "cluster_weights", "padded_cells"]

Statistic = Callable[[np.ndarray], np.ndarray]
_CHUNK = 128    # replicates drawn at once by the cluster bootstrap (memory: chunk x clusters)
#: Resampled rows (replicates x rows) beyond which mean scores are bootstrapped group by
#: group (:func:`grouped_mean_replicates`): 20,000 finite scores at 1,000 replicates, about
#: a second per grouping on one core.
ROW_DRAWS = 20_000_000
#: Rows of a code from which :func:`grouped_mean_replicates` draws its mean from the
#: normal law rather than resampling its rows.
NORMAL_FROM = 1_000


@dataclass(frozen=True)
class BootstrapSpec:
    """How intervals are computed: replicates, seed, percentile or BCa, stratification."""

    n_boot: int = 1000
    seed: int = 0
    method: Literal["percentile", "bca"] = "percentile"
    stratified: bool = False
    confidence: float = 0.95

    @property
    def quantiles(self) -> tuple[float, float]:
        tail = (1.0 - self.confidence) / 2.0
        return tail, 1.0 - tail


@dataclass(frozen=True)
class Columns:
    """The named blocks of a statistic's columns, in order: ``(name, shape)`` pairs.

    A :data:`Statistic` returns one flat (B, M) array, so that the draws, the jackknife and
    the intervals treat every column alike; :meth:`pack` builds it from named blocks and
    :meth:`unpack` names the blocks of a point estimate (M,) or of its intervals (M, 2)
    again, so that no caller counts column offsets.

    >>> cols = Columns((("rate", (2, 3)), ("gap", ())))
    >>> cols.size, cols.pack({"rate": np.zeros((4, 2, 3)), "gap": np.ones(4)}).shape
    (7, (4, 7))
    >>> {name: block.shape for name, block in cols.unpack(np.zeros((7, 2))).items()}
    {'rate': (2, 3, 2), 'gap': (2,)}
    """

    blocks: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        """M, the number of columns."""
        return sum(math.prod(shape) for _, shape in self.blocks)

    def pack(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """Named blocks (B, *shape) -> (B, M) columns, in the order of :attr:`blocks`."""
        first = np.asarray(values[self.blocks[0][0]])
        b = len(first)
        return np.concatenate([np.reshape(values[name], (b, -1)) for name, _ in self.blocks],
                              axis=1)

    def unpack(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """(M, ...) columns (a point estimate, intervals (M, 2)) -> {name: (*shape, ...)}."""
        out, start = {}, 0
        for name, shape in self.blocks:
            stop = start + math.prod(shape)
            out[name] = values[start:stop].reshape((*shape, *values.shape[1:]))
            start = stop
        return out


def _dense(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer keys renumbered 0 .. K-1 over the distinct keys present, and K."""
    uniq, inverse = np.unique(np.asarray(keys), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), len(uniq)


def cluster_cells(clusters: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """(K, n_cells) counts of each cluster's rows per cell, from per-row cluster keys
    ``clusters`` (N,) and cell indices ``cells`` (N,); K = the distinct keys present."""
    clusters, k = _dense(clusters)
    counts = np.bincount(clusters * n_cells + np.asarray(cells, dtype=np.int64),
                         minlength=k * n_cells)
    return counts.reshape(k, n_cells)


def padded_cells(matrix: np.ndarray, n_cells: int) -> np.ndarray:
    """(K, C') cluster cells widened to (K, n_cells) with zero columns (cells such as the
    held-out confusion counts, which no cluster holds)."""
    out = np.zeros((len(matrix), n_cells), dtype=np.int64)
    out[:, :matrix.shape[1]] = matrix
    return out


def cluster_weights(n_clusters: int, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, K) multiplicities of K clusters drawn with replacement, K per replicate."""
    if n_clusters == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    # multinomial(K, 1/K) per replicate, as the counts of K uniform draws (faster for many
    # clusters than numpy's multinomial).
    picks = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    picks += np.arange(n_boot)[:, None] * n_clusters
    return np.bincount(picks.ravel(), minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)


def _chunked_weights(n_clusters: int, n_boot: int, rng: np.random.Generator
                     ) -> Iterator[tuple[slice, np.ndarray]]:
    """:func:`cluster_weights` of ``n_boot`` replicates as float, :data:`_CHUNK` replicates
    at a time (memory: chunk x clusters): ``(rows, weights)`` pairs."""
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        yield slice(start, start + b), cluster_weights(n_clusters, n_boot=b, rng=rng).astype(float)


def draw_cells(counts: np.ndarray, *, n_boot: int, rng: np.random.Generator,
               strata: np.ndarray | None = None, clusters: np.ndarray | None = None
               ) -> np.ndarray:
    """Bootstrap replicates of cell counts: (C,) integer counts -> (n_boot, C).

    Without ``strata`` one multinomial(N, counts / N) per replicate, exactly the cell
    counts of N rows resampled with replacement. With ``strata`` (C,) integer labels,
    each stratum's total stays fixed and its cells are drawn multinomially. With
    ``clusters`` (K, C) (:func:`cluster_cells`; its columns sum to ``counts`` where it
    covers them), the strata it covers are drawn by resampling whole clusters instead.
    """
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros((n_boot, len(counts)), dtype=np.int64)
    labels = np.zeros(len(counts), dtype=int) if strata is None else np.asarray(strata)
    covered = np.zeros(len(counts), dtype=bool)
    if clusters is not None:
        covered = np.isin(labels, labels[np.asarray(clusters).sum(axis=0) > 0])
        matrix = np.asarray(clusters, dtype=float)
        for rows, w in _chunked_weights(len(matrix), n_boot, rng):
            out[rows] = np.rint(w @ matrix).astype(np.int64)   # BLAS, exact
    for s in np.unique(labels[~covered]):
        cols = np.flatnonzero((labels == s) & ~covered)
        total = int(counts[cols].sum())
        if total == 0:
            continue
        out[:, cols] = rng.multinomial(total, counts[cols] / total, size=n_boot)
    return out


def jackknife_cells(stat: Statistic, counts: np.ndarray, clusters: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-row-out values of ``stat`` on cell counts (leave-one-cluster-out with
    ``clusters``, (K, C)).

    Every row of a cell gives the same leave-one-out value, so the jackknife needs one
    evaluation per non-empty cell. Returns (values (M, ...), weights (M,) = rows per cell,
    or 1 per cluster).
    """
    counts = np.asarray(counts, dtype=np.int64)
    if clusters is not None:
        # Clusters of audited images, and the rows of cells no cluster holds (the held-out
        # confusion counts), each left out in turn.
        clusters = np.asarray(clusters)
        values = [stat(counts[None, :] - clusters)]
        weights = [np.ones(len(clusters))]
        rest = np.flatnonzero((clusters.sum(axis=0) == 0) & (counts > 0))
        if len(rest):
            values.append(stat(_minus_one(counts, rest)))
            weights.append(counts[rest].astype(float))
        return np.concatenate(values), np.concatenate(weights)
    cells = np.flatnonzero(counts > 0)
    return stat(_minus_one(counts, cells)), counts[cells].astype(float)


def _minus_one(counts: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(len(cells), C): ``counts`` with one row taken out of each of ``cells`` in turn."""
    minus = np.repeat(counts[None, :], len(cells), axis=0)
    minus[np.arange(len(cells)), cells] -= 1
    return minus


def _acceleration(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """BCa acceleration from weighted jackknife values (M, ...) -> (...)."""
    w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(w * values, axis=0) / np.sum(w * np.isfinite(values), axis=0)
        d = mean - values
        num = np.nansum(w * d ** 3, axis=0)
        den = 6.0 * np.nansum(w * d ** 2, axis=0) ** 1.5
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def intervals(point: np.ndarray, reps: np.ndarray, spec: BootstrapSpec,
              jackknife: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Percentile or BCa intervals: point (...), reps (B, ...) -> (..., 2) [low, high].

    Replicates where the statistic is undefined (NaN, e.g. a group that vanished from
    the resample) are left out; an interval is NaN where fewer than half are defined.
    BCa needs ``jackknife`` = (values (M, ...), weights (M,)).
    """
    point = np.asarray(point, dtype=float)
    reps = np.asarray(reps, dtype=float)
    lo_q, hi_q = spec.quantiles
    out = np.full((*point.shape, 2), np.nan)
    if reps.shape[0] == 0:
        return out
    defined = np.isfinite(reps).sum(axis=0)
    enough = defined >= max(reps.shape[0] // 2, 1)
    if spec.method == "bca" and jackknife is not None:
        from scipy.stats import norm

        with np.errstate(invalid="ignore"):
            below = np.sum(reps < point, axis=0) + 0.5 * np.sum(reps == point, axis=0)
        frac = np.clip(below / np.maximum(defined, 1), 1e-6, 1 - 1e-6)
        z0 = norm.ppf(frac)
        acc = _acceleration(*jackknife)
        qs = []
        for q in (lo_q, hi_q):
            zq = z0 + norm.ppf(q)
            with np.errstate(invalid="ignore", divide="ignore"):
                qs.append(norm.cdf(z0 + zq / (1.0 - acc * zq)))
        flat_reps = reps.reshape(reps.shape[0], -1)
        flat_out = out.reshape(-1, 2)
        for j in range(flat_reps.shape[1]):
            col = flat_reps[:, j]
            col = col[np.isfinite(col)]
            if col.size and np.ravel(enough)[j]:
                flat_out[j] = np.quantile(col, [np.ravel(qs[0])[j], np.ravel(qs[1])[j]])
        return flat_out.reshape(out.shape)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanquantile(reps, [lo_q, hi_q], axis=0)
    out[...] = np.moveaxis(q, 0, -1)
    out[~enough] = np.nan
    return out


def cell_interval(stat: Statistic, counts: np.ndarray, draws: np.ndarray, spec: BootstrapSpec,
                  clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate (...) and interval (..., 2) of ``stat`` from counts and their draws
    (``clusters``: the (K, C) cluster cells the draws resampled, for BCa's jackknife)."""
    point = stat(np.asarray(counts)[None, :])[0]
    if draws.shape[0] == 0:
        return point, np.full((*np.shape(point), 2), np.nan)
    jack = jackknife_cells(stat, counts, clusters) if spec.method == "bca" else None
    return point, intervals(point, stat(draws), spec, jack)


def _cluster_sums(values: np.ndarray, codes: np.ndarray, n_codes: int, clusters: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(K, n_codes) sums of ``values`` and row counts per cluster (of those present) and
    code."""
    clusters, k = _dense(clusters)
    keys = clusters * n_codes + codes
    sums = np.bincount(keys, weights=values, minlength=k * n_codes).reshape(k, n_codes)
    cnts = np.bincount(keys, minlength=k * n_codes).reshape(k, n_codes).astype(float)
    return sums, cnts


def mean_replicates(values: np.ndarray, codes: np.ndarray, n_codes: int, *,
                    spec: BootstrapSpec, rng: np.random.Generator, chunk: int = 64,
                    clusters: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap replicates of per-code means of ``values``: (B, n_codes).

    Parameters
    ----------
    values
        (N,) finite floats (e.g. discriminator scores).
    codes
        (N,) integer group codes in ``[0, n_codes)``.
    spec
        ``stratified`` resamples within each code (sizes fixed); otherwise all N rows
        are resampled together (group sizes vary, as when resampling the table).
    clusters
        (N,) cluster keys: whole clusters are resampled (not stratified).

    Rows are resampled ``chunk`` replicates at a time, to bound memory (chunk x N).
    Beyond :data:`ROW_DRAWS` resampled rows (``n_boot * N``; a million images with the
    default 1,000 replicates would draw 10**9 rows per grouping) the replicates come
    from :func:`grouped_mean_replicates` instead. A code with no row in a replicate has
    a NaN mean there.
    """
    values = np.asarray(values, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    n = len(values)
    reps = np.full((spec.n_boot, n_codes), np.nan)
    if n == 0 or spec.n_boot == 0:
        return reps
    if clusters is not None:
        sums, cnts = _cluster_sums(values, codes, n_codes, clusters)
        for rows, w in _chunked_weights(len(sums), spec.n_boot, rng):
            with np.errstate(invalid="ignore", divide="ignore"):
                reps[rows] = (w @ sums) / (w @ cnts)
        return reps
    if n * spec.n_boot > ROW_DRAWS:
        return grouped_mean_replicates(values, codes, n_codes, spec=spec, rng=rng)
    if spec.stratified:
        for c in range(n_codes):
            v = values[codes == c]
            if len(v) == 0:
                continue
            for start in range(0, spec.n_boot, chunk):
                b = min(chunk, spec.n_boot - start)
                reps[start:start + b, c] = v[rng.integers(0, len(v), (b, len(v)))].mean(axis=1)
        return reps
    for start in range(0, spec.n_boot, chunk):
        b = min(chunk, spec.n_boot - start)
        idx = rng.integers(0, n, (b, n))
        keys = (np.arange(b)[:, None] * n_codes + codes[idx]).ravel()
        sums = np.bincount(keys, weights=values[idx].ravel(), minlength=b * n_codes)
        cnts = np.bincount(keys, minlength=b * n_codes)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[start:start + b] = (sums / cnts).reshape(b, n_codes)
    return reps


def grouped_mean_replicates(values: np.ndarray, codes: np.ndarray, n_codes: int, *,
                            spec: BootstrapSpec, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of per-code means (B, n_codes), drawn group by group.

    Resampling N rows with replacement is the same as drawing how many rows each code
    gets (multinomial(N, n_c / N); fixed at n_c when ``spec.stratified``) and then, for
    each code, that many rows among its own. This draws the first step exactly and the
    second exactly for codes under :data:`NORMAL_FROM` rows; the mean of m rows drawn
    from a code with at least that many is drawn from the normal law with its exact mean
    and variance (the code's mean, and its plug-in variance over m), which the central
    limit theorem makes indistinguishable from the resampled mean's at that size (the
    percentile ends differ by a fraction of the Monte-Carlo error of 1,000 replicates).
    Cost O(N + n_boot x (codes + rows of small codes)) instead of O(n_boot x N).

    ``values`` (N,) finite floats; ``codes`` (N,) in ``[0, n_codes)``. A code with no
    row in a replicate has a NaN mean there.
    """
    values = np.asarray(values, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    n, b = len(values), spec.n_boot
    reps = np.full((b, n_codes), np.nan)
    cnts = np.bincount(codes, minlength=n_codes)
    if n == 0 or b == 0:
        return reps
    drawn = np.tile(cnts, (b, 1)) if spec.stratified else \
        rng.multinomial(n, cnts / n, size=b)                      # (B, n_codes) rows per code
    small = codes.astype(np.int16) if n_codes < 2 ** 15 else codes   # radix sort: O(N)
    order = np.argsort(small, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(cnts)])
    for c in np.flatnonzero(cnts):
        v = values[order[bounds[c]:bounds[c + 1]]]
        m = drawn[:, c]
        has = m > 0
        if len(v) >= NORMAL_FROM:
            z = rng.standard_normal(b)
            reps[has, c] = v.mean() + np.sqrt(v.var() / m[has]) * z[has]
        else:
            picks = v[rng.integers(0, len(v), size=int(m.sum()))]
            sums = np.bincount(np.repeat(np.arange(b), m), weights=picks, minlength=b)
            reps[has, c] = sums[has] / m[has]
    return reps


def jackknife_means(values: np.ndarray, codes: np.ndarray, n_codes: int,
                    clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-row-out (with ``clusters``: leave-one-cluster-out) per-code means, for
    BCa: (values (M, n_codes), weights (M,))."""
    values = np.asarray(values, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    if clusters is not None:
        sums, cnts = _cluster_sums(values, codes, n_codes, clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (sums.sum(axis=0) - sums) / (cnts.sum(axis=0) - cnts)
        return out, np.ones(len(sums))
    sums = np.bincount(codes, weights=values, minlength=n_codes)
    cnts = np.bincount(codes, minlength=n_codes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        full = sums / cnts
        out = np.repeat(full[None, :], len(values), axis=0)
        rows = np.arange(len(values))
        out[rows, codes] = (sums[codes] - values) / (cnts[codes] - 1)
    return out, np.ones(len(values))


def estimate(value: float | None, ci: np.ndarray | None, n: int, k: int | None = None, *,
             unbounded: str | None = None) -> dict[str, Any]:
    """An ``estimate`` of results.json: value, ci [low, high] and the n it rests on (k =
    successes for rates). Non-finite values and intervals become None, except an interval
    with a finite low end and an infinite high end (a ratio whose denominator may be 0):
    it becomes [low, None] and ``unbounded`` (the reason, in words) is recorded with it."""
    v = finite_or_none(value)
    open_above = (ci is not None and unbounded is not None and np.isfinite(ci[0])
                  and np.isposinf(ci[1]))
    if open_above:
        shown = [float(ci[0]), None]
    elif ci is None or v is None or not np.all(np.isfinite(ci)):
        shown = None
    else:
        shown = [float(ci[0]), float(ci[1])]
    out: dict[str, Any] = {"value": v, "ci": shown, "n": int(n)}
    if k is not None:
        out["k"] = int(k)
    if open_above:
        out["unbounded"] = unbounded
    return out
