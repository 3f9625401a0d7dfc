"""Training in torch: many decoder MLPs at once, and batched logistic-regression probes.

Imported only when decoders are trained (``gan-audit --help`` never imports torch).

Members are independent models stacked along a leading dimension M (one per layer, or
per chosen layer for the control task) and trained together: the products with the
inputs (whose widths differ) run per member, everything after them batched.

Two solvers, both without ``torch.optim`` (whose first use imports ``torch._dynamo``,
seconds of start-up on a CPU):

- :func:`fit_probes`: L2-regularised logistic regression with scikit-learn's objective,
  every (member, concept) problem solved at once by a batched L-BFGS with its own
  history, scaling, line search and stopping per problem; problems leave the batch as
  they converge;
- :func:`fit_mlps`: minibatch AdamW (torch's fused kernel) with a one-cycle schedule
  (linear warm-up over the first epoch, cosine decay to zero at ``max_epochs``),
  optionally started from the probes (linear path = probe, hidden-to-head weights = 0),
  with early stopping per member on the validation loss checked after every epoch; the
  networks run feature-major (M x features x n) with a hand-written backward pass.

At these sizes a CPU spends more time dispatching small operations than computing, so
both count operations: ``benchmarks/decoders.py`` measures the result.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audit.config import DecoderSettings
from audit.decode.model import HeadLayout

__all__ = ["Targets", "fit_mlps", "fit_probes", "logits", "gram_matrices",
           "probe_preconditioners", "principal_bases"]


@dataclass
class Targets:
    """Per-member labels: codes M x N x C (long, -1 missing), sample weights M x N x C."""

    codes: torch.Tensor
    weights: torch.Tensor

    def rows(self, idx: torch.Tensor) -> Targets:
        return Targets(self.codes[:, idx], self.weights[:, idx])



# ----------------------------------------------------------------------------- probes


def designs(xs: Sequence[torch.Tensor], rows: np.ndarray) -> list[torch.Tensor]:
    """Per member, the transposed design matrix of its training ``rows``: the features and a
    row of ones, (D_i + 1) x n, contiguous. Shared by every probe fit on those rows."""
    idx = torch.as_tensor(rows, device=xs[0].device)
    out = []
    for x in xs:
        x1t = x.new_ones(x.shape[1] + 1, len(rows))
        x1t[:-1] = x.index_select(0, idx).T
        out.append(x1t)
    return out


class _Columns:
    """Per-concept reductions over the logit rows of M x width x ... tensors."""

    def __init__(self, layout: HeadLayout, device: torch.device, dtype: torch.dtype) -> None:
        g = torch.zeros(layout.width, len(layout.names), dtype=dtype, device=device)
        for j in range(len(layout.names)):
            g[layout.slice(j), j] = 1.0
        self.g, self.gt = g, g.T.contiguous()       # width x C indicator, transposed
        self.concept = g.argmax(dim=1)[None]        # 1 x width: each row's concept

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-problem inner products (M x C) of M x width x D tensors."""
        return torch.linalg.vecdot(a, b, dim=2) @ self.g

    def spread(self, s: torch.Tensor) -> torch.Tensor:
        """M x C -> M x width x 1 (each concept's value on its rows)."""
        return (s @ self.gt)[:, :, None]

    def amax(self, a: torch.Tensor) -> torch.Tensor:
        """Per-problem max |a| (M x C) of an M x width x D tensor."""
        m = a.abs().amax(dim=2)
        return m.new_zeros(m.shape[0], self.g.shape[1]).scatter_reduce_(
            1, self.concept.expand_as(m), m, reduce="amax")


@dataclass
class _ProbeData:
    """A probe problem set: per-member transposed designs (:func:`designs`), targets.

    The layout lists its binary concepts first (:class:`_Order`), so that one set of
    operations serves all of them. ``sel`` holds, per member, the logit rows whose problems
    are being solved (None: all): the others are left out of its products.
    """

    x1t: list[torch.Tensor]           # (D_i + 1) x n per member
    y: torch.Tensor                   # M x width x n: binary target / one-hot
    known: torch.Tensor               # M x C x n
    n_known: torch.Tensor             # M x C
    pen: torch.Tensor                 # M x 1 x (Dmax + 1): 1 on penalised weights
    layout: HeadLayout
    sel: list[torch.Tensor | None] | None = None

    def __post_init__(self) -> None:
        self.cols = _Columns(self.layout, self.y.device, self.y.dtype)
        self.nb = sum(k == "binary" for k in self.layout.kinds)
        if self.layout.kinds[:self.nb] != ("binary",) * self.nb:
            raise ValueError("the probes' layout must list its binary concepts first")
        self.sel = self.sel or [None] * len(self.x1t)

    def loss_grad(self, theta: torch.Tensor, *, zero: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective per problem (M x C) and its gradient (M x width x (Dmax + 1)).

        Objective of a problem: mean log-loss over its labelled rows + ||w||^2 / (2 n), the
        intercept unpenalised (scikit-learn's ``C = 1``). ``zero``: ``theta`` is all zeros
        (so are the logits, which need no product).
        """
        full = all(rows is None for rows in self.sel) and not zero
        z = self.y.new_empty(self.y.shape) if full else self.y.new_zeros(self.y.shape)
        for i, (x, rows) in enumerate(zip(self.x1t, self.sel, strict=True)):
            if rows is None and not zero:
                torch.mm(theta[i, :, :x.shape[0]], x, out=z[i])
            elif not zero:
                z[i, rows] = theta[i, rows, :x.shape[0]] @ x
        r = torch.empty_like(z)
        loss = z.new_empty(z.shape[0], len(self.layout.names))
        nb = self.nb
        if nb:
            zb, yb, kb = z[:, :nb], self.y[:, :nb], self.known[:, :nb]
            loss[:, :nb] = ((F.softplus(zb) - yb * zb) * kb).sum(dim=2)
            torch.sub(torch.sigmoid(zb), yb, out=r[:, :nb]).mul_(kb)
        for j in range(nb, len(self.layout.names)):
            sl = self.layout.slice(j)
            zj, yj, kj = z[:, sl], self.y[:, sl], self.known[:, j:j + 1]
            lse = torch.logsumexp(zj, dim=1, keepdim=True)
            loss[:, j] = ((lse - (yj * zj).sum(dim=1, keepdim=True)) * kj).sum(dim=(1, 2))
            torch.sub(torch.exp(zj - lse), yj, out=r[:, sl]).mul_(kj)
        col_n = (self.n_known @ self.cols.gt)[:, :, None]           # M x width x 1
        r.div_(col_n)
        grad = theta * self.pen / col_n
        for i, (x, rows) in enumerate(zip(self.x1t, self.sel, strict=True)):
            if rows is None:
                grad[i, :, :x.shape[0]].addmm_(r[i], x.T)
            else:
                grad[i, rows, :x.shape[0]] += r[i, rows] @ x.T
        obj = (loss + 0.5 * self.cols.dot(theta * self.pen, theta)) / self.n_known
        return obj, grad

    def restrict(self, members: Sequence[int], concepts: Sequence[int],
                 want: torch.Tensor) -> _ProbeData:
        """The problems of ``members`` x ``concepts`` only, each member's products on the
        rows of its problems that are wanted (``want``: a bool mask over the result's
        problems)."""
        rows, mi = self.layout.rows(concepts), list(members)
        x1t = [self.x1t[i] for i in mi]
        d1 = max(x.shape[0] for x in x1t)
        sub = self.layout.pick(concepts)
        out = _ProbeData(x1t, self.y[mi][:, rows], self.known[mi][:, concepts],
                         self.n_known[mi][:, concepts], self.pen[mi][:, :, :d1], sub)
        out.sel = [None if bool(w.all()) else
                   torch.as_tensor(sub.rows(w.nonzero().flatten().tolist()), device=w.device)
                   for w in want]
        return out


def gram_matrices(design: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per member, the second moments ``X1'X1 / n`` of its training rows with a column of
    ones (float64), from its transposed design (:func:`designs`).

    (D_i + 1) x (D_i + 1); the last row and column belong to the intercept. On a CPU the
    product goes through numpy, which computes ``A @ A.T`` as a symmetric rank-k update
    (half the arithmetic of torch's general product).
    """
    out = []
    for x1t in design:
        if x1t.device.type == "cpu":
            a = x1t.numpy()
            out.append(torch.from_numpy(a @ a.T).double() / x1t.shape[1])
        else:
            out.append((x1t @ x1t.T).double() / x1t.shape[1])
    return out


def probe_preconditioners(grams: Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Per member, the inverse of the logistic Hessian bound ``X1'X1 / 4n + I / n``.

    ``grams`` from :func:`gram_matrices` (second moments), ``n`` training rows; the
    intercept is not penalised. Float32, factored in float32 (a preconditioner needs no
    more), or in float64 where float32 cannot factor it (a bound so ill-conditioned that
    float32 loses its positive definiteness). Shared by every probe fit on the same
    features (the real and the control task).
    """
    out = []
    for gram in grams:
        bound = gram / 4.0
        bound.diagonal()[:-1] += 1.0 / n
        chol, info = torch.linalg.cholesky_ex(bound.float())
        if int(info):
            chol = torch.linalg.cholesky(bound)
        out.append(torch.cholesky_inverse(chol).float())
    return out


def principal_bases(grams: Sequence[torch.Tensor], k: int | None, *, seed: int = 0,
                    ) -> list[torch.Tensor | None]:
    """Per member, a D_i x k orthonormal basis of its top-k principal components.

    From the uncentred second moments of standardised (so centred) features, by
    randomised subspace iteration (seeded, in float32: a basis for the hidden layers to
    read, not a decomposition to report). ``None`` where D_i <= k or ``k`` is None.
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor | None] = []
    for gram in grams:
        d = gram.shape[0] - 1
        if k is None or d <= k:
            out.append(None)
            continue
        g = gram[:-1, :-1].float().contiguous()
        q = torch.randn(d, min(k + 10, d), generator=gen).to(g.device)
        for _ in range(4):
            q, _ = torch.linalg.qr(g @ q)
        _, vecs = torch.linalg.eigh(q.T @ g @ q)
        out.append(q @ vecs[:, -k:])
    return out


def fit_probes(xs: Sequence[torch.Tensor], targets: Targets, train: np.ndarray,
               layout: HeadLayout, *, max_iter: int = 100, tol: float = 1e-4, history: int = 10,
               precond: Sequence[torch.Tensor] | None = None,
               init: Sequence[dict[str, np.ndarray]] | None = None,
               design: Sequence[torch.Tensor] | None = None,
               wanted: np.ndarray | None = None,
               ) -> list[dict[str, np.ndarray]]:
    """L2-regularised logistic regression per member and concept (scikit-learn's objective).

    Minimises, for every member and concept, the mean log-loss over its labelled training
    rows plus ``||w||^2 / (2 n)`` with an unpenalised intercept: ``LogisticRegression()``'s
    objective (C = 1, multinomial for multiclass concepts), to the same tolerance
    (max |gradient| <= ``tol``) in at most ``max_iter`` iterations. All problems run at once
    in a batched L-BFGS with its own history, scaling, step and stopping per problem,
    whose initial inverse Hessian is :func:`probe_preconditioners`' (computed here unless
    given). Problems leave the batch as they converge (a member when all of its concepts
    have, a concept when it has at every member), so the slowest ones do not carry the
    others' arithmetic.

    Parameters
    ----------
    xs : list of N x D_i float32 tensors
        Standardised features of each member.
    targets : Targets
        Codes of each member (M x N x C); sample weights are ignored (unweighted fit).
    train : int array
        Training rows.
    layout : HeadLayout
        Where each concept's logits sit.
    precond : list of tensors, optional
        :func:`probe_preconditioners` of ``xs`` and ``train``.
    init : list of dict, optional
        Starting points (each member's ``head.weight``, ``head.bias``, e.g. a fit with a
        smaller ``max_iter``); zero where not given.
    design : list of tensors, optional
        :func:`designs` of ``xs`` and ``train``.
    wanted : M x C bool array, optional
        The problems to solve (default: all); the others keep their starting point.

    Returns
    -------
    list of dict
        Each member's ``head.weight`` (width x D_i) and ``head.bias`` (width,).
    """
    device, dtype = xs[0].device, xs[0].dtype
    m, c = len(xs), len(layout.names)
    design = list(design) if design is not None else designs(xs, train)
    n = len(train)
    order = _Order.of(layout)                     # binary concepts first, undone on export
    out_rows = torch.as_tensor(order.inverse_rows, device=device)
    layout = layout.pick(order.concepts)
    tr = torch.as_tensor(train, device=device)
    d1 = max(x.shape[0] for x in design)
    codes = targets.codes[:, tr][:, :, order.concepts].transpose(1, 2)       # M x C x n
    known = (codes >= 0).to(dtype)
    y = torch.zeros(m, layout.width, n, dtype=dtype, device=device)
    for j, kind in enumerate(layout.kinds):
        if kind == "binary":
            y[:, layout.starts[j]] = (codes[:, j] == 1).to(dtype)
        else:
            y[:, layout.slice(j)] = F.one_hot(codes[:, j].clamp(min=0),
                                              layout.widths[j]).to(dtype).transpose(1, 2)
    pen = torch.zeros(m, 1, d1, dtype=dtype, device=device)
    for i, x in enumerate(design):
        pen[i, 0, :x.shape[0] - 1] = 1.0                                 # not the intercept
    data = _ProbeData(design, y, known, known.sum(dim=2).clamp(min=1.0), pen, layout)
    pre = (list(precond) if precond is not None
           else probe_preconditioners(gram_matrices(design), n))

    result = torch.zeros(m, layout.width, d1, dtype=dtype, device=device)
    for i, p in enumerate(init or ()):
        d = p["head.weight"].shape[1]
        result[i, :, :d] = torch.as_tensor(p["head.weight"][order.rows], device=device)
        result[i, :, d] = torch.as_tensor(p["head.bias"][order.rows], device=device)

    def export() -> list[dict[str, np.ndarray]]:
        out = result.index_select(1, out_rows)
        return [{"head.weight": out[i, :, :x.shape[0] - 1].contiguous().cpu().numpy(),
                 "head.bias": out[i, :, x.shape[0] - 1].contiguous().cpu().numpy()}
                for i, x in enumerate(design)]

    want = (torch.ones(m, c, dtype=torch.bool, device=device) if wanted is None
            else torch.as_tensor(np.asarray(wanted, dtype=bool)[:, order.concepts],
                                 device=device))
    mi = want.any(dim=1).nonzero().flatten().tolist()     # the problems in the batch
    ci = want.any(dim=0).nonzero().flatten().tolist()
    if not mi:
        return export()
    want = want[mi][:, ci]

    def rows_of(concepts: list[int]) -> torch.Tensor:
        return torch.as_tensor(layout.rows(concepts), device=device)

    data = data.restrict(mi, ci, want)
    theta = result[mi][:, rows_of(ci), :data.pen.shape[2]]
    pre = [pre[i] for i in mi]
    f, g = data.loss_grad(theta, zero=not init)
    hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    gamma = torch.ones(len(mi), len(ci), dtype=dtype, device=device)

    def apply_pre(v: torch.Tensor) -> torch.Tensor:
        if len(pre) == 1 and pre[0].shape[0] == v.shape[2]:
            return (v[0] @ pre[0])[None]
        out = torch.zeros_like(v)
        for i, p in enumerate(pre):
            torch.mm(v[i, :, :p.shape[0]], p, out=out[i, :, :p.shape[0]])
        return out

    def write_back() -> None:
        """The batch's state goes back to ``result``."""
        result[torch.as_tensor(mi, device=device)[:, None], rows_of(ci)[None, :],
               :theta.shape[2]] = theta

    for it in range(max_iter + 1):
        active = (data.cols.amax(g) > tol) & want
        keep_m = active.any(dim=1).nonzero().flatten().tolist()
        keep_c = active.any(dim=0).nonzero().flatten().tolist()
        if not keep_m or it == max_iter:
            break
        if len(keep_m) < len(mi) or len(keep_c) < len(ci):
            # Converged problems leave the batch (their state goes back to ``result``).
            write_back()
            km = torch.as_tensor(keep_m, device=device)
            kc = torch.as_tensor(keep_c, device=device)
            sub = data.restrict(keep_m, keep_c, want[km][:, kc])
            lrows = torch.as_tensor(data.layout.rows(keep_c), device=device)

            def cut(t: torch.Tensor, km: torch.Tensor = km, lrows: torch.Tensor = lrows,
                    width: int = sub.pen.shape[2]) -> torch.Tensor:
                return t.index_select(0, km).index_select(1, lrows)[:, :, :width]

            def cut_mc(t: torch.Tensor, km: torch.Tensor = km, kc: torch.Tensor = kc
                       ) -> torch.Tensor:
                return t.index_select(0, km).index_select(1, kc)

            theta, g, f, gamma = cut(theta), cut(g), cut_mc(f), cut_mc(gamma)
            hist = [(cut(s), cut(yv), cut_mc(rho)) for s, yv, rho in hist]
            pre = [pre[i] for i in keep_m]
            want, active = cut_mc(want), cut_mc(active)
            mi, ci, data = [mi[i] for i in keep_m], [ci[j] for j in keep_c], sub
        cols = data.cols
        # Two-loop recursion, per problem.
        q = g.clone()
        alphas = []
        for s, yv, rho in reversed(hist):
            a = rho * cols.dot(s, q)
            alphas.append(a)
            q.addcmul_(cols.spread(a), yv, value=-1.0)
        d = apply_pre(q).mul_(cols.spread(gamma))
        for (s, yv, rho), a in zip(hist, reversed(alphas), strict=True):
            d.addcmul_(cols.spread(a - rho * cols.dot(yv, d)), s)
        d.mul_(cols.spread(-active.to(dtype)))
        gd = cols.dot(g, d)
        # Backtracking (Armijo) line search per problem, from step 1.
        step = active.to(dtype)
        for _ in range(30):
            theta_new = theta + cols.spread(step) * d
            f_new, g_new = data.loss_grad(theta_new)
            ok = (f_new <= f + 1e-4 * step * gd) | ~active
            if bool(ok.all()):
                break
            # Minimiser of the quadratic through f, f'(0) and f(step), within [0.1, 0.5] step.
            curv = (f_new - f - gd * step).clamp(min=1e-30)
            shrink = (-gd * step / (2.0 * curv)).clamp(0.1, 0.5)
            step = torch.where(ok, step, shrink * step)
        else:                                   # no decrease: leave those problems as they are
            step = torch.where(ok, step, torch.zeros_like(step))
            theta_new = theta + cols.spread(step) * d
            f_new, g_new = data.loss_grad(theta_new)
        s, yv = theta_new - theta, g_new - g
        sy, yy = cols.dot(s, yv), cols.dot(yv, apply_pre(yv))
        good = (sy > 1e-10) & (yy > 0)
        rho = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)),
                          torch.zeros_like(sy))
        hist = [*hist[len(hist) - history + 1:], (s, yv, rho)] if history > 1 else [(s, yv, rho)]
        gamma = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), gamma)
        theta, f, g = theta_new, f_new, g_new
    write_back()
    return export()


# ------------------------------------------------------------------------------ MLPs
#
# The MLPs train feature-major: activations and logits are M x features x n, so that every
# per-concept reduction runs over the middle dimension (a softmax over a last dimension of
# 2-10 logits is an order of magnitude slower on a CPU), and the logit rows are in training
# order (:class:`_Order`): the binary concepts' rows first as one block, so that their loss
# reads a slice rather than a gather.


@dataclass(frozen=True)
class _Order:
    """A layout's training order: binary concepts first, then the multiclass ones.

    ``concepts[k]`` is the layout index of the k-th concept in training order and
    ``rows[r]`` the layout row of training logit row r; the first ``nb`` concepts (and
    rows) are the binary ones; ``blocks`` holds each multiclass concept's training position
    and rows.
    """

    concepts: np.ndarray
    rows: np.ndarray
    nb: int
    blocks: tuple[tuple[int, slice], ...]

    @classmethod
    def of(cls, layout: HeadLayout) -> _Order:
        rows = layout.rows(layout.binary)
        blocks = []
        for k, j in enumerate(layout.multiclass):
            start = len(rows)
            rows += layout.rows([j])
            blocks.append((len(layout.binary) + k, slice(start, len(rows))))
        return cls(np.array([*layout.binary, *layout.multiclass], dtype=np.int64),
                   np.array(rows, dtype=np.int64), len(layout.binary), tuple(blocks))

    @cached_property
    def inverse_rows(self) -> np.ndarray:
        """Layout row -> training row."""
        return np.argsort(self.rows)


@dataclass
class _Batch:
    """One batch's targets, feature-major (M x rows x n): the probe logits to add
    (``offset``, width rows, or None), the binary concepts' 0/1 targets (nb rows, 0 where
    missing), each concept's sample weight and whether it is labelled (C rows each, training
    order) and the multiclass concepts' codes (long, 0 where missing)."""

    offset: torch.Tensor | None
    binary: torch.Tensor
    weights: torch.Tensor
    known: torch.Tensor
    codes: torch.Tensor


@dataclass
class _Labels:
    """Targets in training order, sample-major and packed (n x M x F float), so that a
    shuffle or a split is one gather of whole rows: per member the offset logits (if
    any), the binary targets, the weights, the labelled flags and the multiclass codes
    (the fields of :class:`_Batch`, in that order)."""

    packed: torch.Tensor
    sizes: tuple[int, int, int, int, int]

    @classmethod
    def of(cls, t: Targets, order: _Order, offset: torch.Tensor | None = None,
           rows: torch.Tensor | None = None) -> _Labels:
        """From per-member codes and weights (M x N x C, the layout's concept order) and
        offset logits (M x width x N, training row order), of the samples ``rows`` if
        given."""
        idx = torch.as_tensor(order.concepts, device=t.codes.device)
        if rows is not None:
            t = t.rows(rows)
            offset = None if offset is None else offset.index_select(2, rows)
        codes = t.codes.index_select(2, idx)                                 # M x N x C
        w = t.weights.index_select(2, idx)
        parts = [] if offset is None else [offset.transpose(1, 2)]
        parts += [(codes[:, :, :order.nb] == 1).to(w.dtype), w, (codes >= 0).to(w.dtype),
                  codes[:, :, order.nb:].clamp(min=0).to(w.dtype)]
        sizes = (0 if offset is None else offset.shape[1], order.nb, codes.shape[2],
                 codes.shape[2], codes.shape[2] - order.nb)
        return cls(torch.cat(parts, dim=2).transpose(0, 1).contiguous(), sizes)

    def take(self, idx: torch.Tensor) -> _Labels:
        """The samples ``idx``."""
        return _Labels(self.packed.index_select(0, idx), self.sizes)

    def cut(self, sl: slice) -> _Labels:
        return _Labels(self.packed[sl], self.sizes)

    def members(self, keep: torch.Tensor) -> _Labels:
        return _Labels(self.packed[:, keep], self.sizes)

    def batch(self) -> _Batch:
        p = self.packed.permute(1, 2, 0).contiguous()                       # M x F x n
        parts = list(torch.split(p, self.sizes, dim=1))
        return _Batch(parts[0] if self.sizes[0] else None, parts[1], parts[2], parts[3],
                      parts[4].long())


def _concept_losses(z: torch.Tensor, b: _Batch, order: _Order, *, grad: bool = False
                    ) -> Any:
    """Loss per member and concept (M x C, training order) of logits ``z`` (M x width x n,
    training order).

    A concept's loss is the weighted mean over its labelled samples: binary cross-entropy
    for binary concepts, cross-entropy of the softmax for multiclass ones; a missing label
    changes no other concept's loss, and a concept without labels contributes 0. With
    ``grad``, also the gradient of the summed losses with respect to ``z``, in closed form:
    ``w (sigmoid(z) - y) / count`` and ``w (softmax(z) - onehot(y)) / count``.
    """
    scale = b.weights / b.known.sum(dim=2, keepdim=True).clamp_(min=1.0)   # M x C x n
    out = z.new_empty(z.shape[0], scale.shape[1])
    d = torch.empty_like(z) if grad else None
    nb = order.nb
    if nb:
        zb, sb = z[:, :nb], scale[:, :nb]
        loss = F.binary_cross_entropy_with_logits(zb, b.binary, reduction="none")
        out[:, :nb] = (loss * sb).sum(dim=2)
        if d is not None:
            torch.sub(torch.sigmoid(zb), b.binary, out=d[:, :nb]).mul_(sb)
    for k, (c, rows) in enumerate(order.blocks):
        y = b.codes[:, k:k + 1]
        s = scale[:, c:c + 1]
        logp = torch.log_softmax(z[:, rows], dim=1)
        out[:, c] = -(logp.gather(1, y) * s).sum(dim=(1, 2))
        if d is not None:
            p = logp.exp_()
            p.scatter_add_(1, y, p.new_full(y.shape, -1.0))
            torch.mul(p, s, out=d[:, rows])
    return (out, d) if grad else out


def _uniform(rows: int, cols: int, bound: float, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(rows, cols).uniform_(-bound, bound, generator=gen)


@dataclass
class _Stack:
    """M MLPs batched along a leading dimension, feature-major, with a hand-written backward.

    Weights are out x in (``nn.Linear``'s convention), per member: ``first`` is
    M x (H0 + S) x Dmax, each member's first hidden layer's weights, then (S = width when
    there is a linear path) the linear path's; without hidden layers it is the head
    (M x width x Dmax). Members whose inputs are narrower than Dmax read zero-padded inputs;
    their padded columns get no gradient and are dropped on export (``fan_in``). ``rest``
    is [b0, (W, b) per further hidden layer, W_head, b_head] (biases M x out x 1), or
    [b_head] without hidden layers. Output rows are in the training order ``order``
    (:class:`_Order`) and go back to the layout's order on export.

    With a frozen linear path (``linear``: the probes) the first layer reads the inputs
    projected on ``bases`` (D_i x k, or the inputs themselves where None), the probe's
    logits are added as a fixed offset and are folded back in on export.

    The network is two or three batched matrix products per layer; its gradient is
    written out (:meth:`backward`) rather than recorded by autograd, whose bookkeeping
    costs more than the arithmetic at these sizes (tests check it against autograd).
    """

    first: torch.Tensor
    rest: list[torch.Tensor]
    h0: int
    skip: bool
    fan_in: Sequence[int]
    order: _Order
    bases: Sequence[torch.Tensor | None] | None = None
    linear: Sequence[dict[str, np.ndarray]] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.first, *self.rest]

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None, *,
                dropout: float = 0.0, gen: torch.Generator | None = None,
                keep: bool = False) -> Any:
        """Logits M x width x n of inputs ``x`` (n x M x Dmax, as stored), + ``offset``.

        Dropout (after each hidden layer) when ``gen`` is given. With ``keep``, returns
        ``(logits, cache)`` for :meth:`backward`.
        """
        xm = x.transpose(0, 1)                                            # M x n x Dmax
        a = torch.bmm(self.first, xm.transpose(1, 2))                     # M x (H0+S) x n
        hs: list[torch.Tensor] = []
        masks: list[torch.Tensor | None] = []
        if not self.h0:
            out = a.add_(self.rest[0])
        else:
            h = torch.relu_(a[:, :self.h0] + self.rest[0])
            for i in range(1, len(self.rest), 2):
                mask = None
                if gen is not None and dropout > 0:
                    mask = torch.empty_like(h).bernoulli_(1.0 - dropout, generator=gen)
                    mask.div_(1.0 - dropout)
                    h = h * mask
                hs.append(h)
                masks.append(mask)
                out = torch.baddbmm(self.rest[i + 1], self.rest[i], h)
                if i + 2 < len(self.rest):
                    h = torch.relu_(out)
            if self.skip:
                out = out.add_(a[:, self.h0:])
        if offset is not None:
            out = out.add_(offset)
        return (out, (xm, hs, masks)) if keep else out

    def backward(self, cache: tuple[Any, ...], dz: torch.Tensor) -> list[torch.Tensor]:
        """Gradients (in :attr:`params` order) of a loss whose gradient with respect to the
        logits of :meth:`forward` (``keep=True``) is ``dz`` (M x width x n)."""
        xm, hs, masks = cache
        grads: list[torch.Tensor] = [dz] * len(self.rest)
        if not self.h0:
            grads[0] = dz.sum(dim=2, keepdim=True)
            da = dz
        else:
            g = dz
            for k in reversed(range(len(hs))):
                grads[2 * k + 1] = torch.bmm(g, hs[k].transpose(1, 2))
                grads[2 * k + 2] = g.sum(dim=2, keepdim=True)
                dh = torch.bmm(self.rest[2 * k + 1].transpose(1, 2), g)
                if masks[k] is not None:
                    dh = dh * masks[k]
                g = torch.ops.aten.threshold_backward(dh, hs[k], 0)
            grads[0] = g.sum(dim=2, keepdim=True)
            da = torch.cat([g, dz], dim=1) if self.skip else g
        return [torch.bmm(da, xm), *grads]

    def clone(self) -> _Stack:
        return self.select(torch.ones(len(self.fan_in), dtype=torch.bool))

    def select(self, keep: torch.Tensor) -> _Stack:
        """A copy of the members where the bool mask ``keep`` (M,) is True."""
        idx = torch.nonzero(keep).flatten().tolist()
        return _Stack(self.first[keep].clone(), [p[keep].clone() for p in self.rest], self.h0,
                      self.skip, [self.fan_in[i] for i in idx], self.order,
                      None if self.bases is None else [self.bases[i] for i in idx],
                      None if self.linear is None else [self.linear[i] for i in idx])

    def copy_from(self, src: _Stack, members: torch.Tensor, mask: torch.Tensor) -> None:
        """Members ``members[k]`` of this stack take ``src``'s member k where ``mask[k]``."""
        for b, p in zip(self.params, src.params, strict=True):
            b[members[mask]] = p[mask]

    def export(self, i: int) -> dict[str, np.ndarray]:
        """Member ``i``'s weights as numpy, torch nn.Linear convention (out x in), outputs
        in the layout's order."""
        back = torch.as_tensor(self.order.inverse_rows, device=self.first.device)

        def arr(t: torch.Tensor, out_rows: bool = False) -> np.ndarray:
            t = t.index_select(0, back) if out_rows else t
            return t.contiguous().cpu().numpy().astype(np.float32)

        first = self.first[i, :, :self.fan_in[i]]
        if not self.h0:
            return {"head.weight": arr(first, True), "head.bias": arr(self.rest[0][i, :, 0], True)}
        w0 = first[:self.h0]
        if self.bases is not None and self.bases[i] is not None:
            w0 = w0 @ self.bases[i].T
        out = {"trunk.0.weight": arr(w0), "trunk.0.bias": arr(self.rest[0][i, :, 0])}
        n_trunk = (len(self.rest) - 1) // 2
        for k in range(1, n_trunk + 1):
            name = f"trunk.{k}" if k < n_trunk else "head"
            last = k == n_trunk
            out[f"{name}.weight"] = arr(self.rest[2 * k - 1][i], last)
            out[f"{name}.bias"] = arr(self.rest[2 * k][i, :, 0], last)
        if self.skip:
            out["skip.weight"] = arr(first[self.h0:], True)
        if self.linear is not None:
            out["skip.weight"] = self.linear[i]["head.weight"].astype(np.float32)
            out["head.bias"] = out["head.bias"] + self.linear[i]["head.bias"]
        return out


def _init_stack(fan_in: Sequence[int], layout: HeadLayout, hidden: Sequence[int], skip: bool,
                gen: torch.Generator) -> _Stack:
    """torch's nn.Linear initialisation per member; the linear path (``skip``) starts at 0."""
    m, width, order = len(fan_in), layout.width, _Order.of(layout)
    sizes = [*hidden, width]
    rows = torch.as_tensor(order.rows)
    first = torch.zeros(m, sizes[0] + (width if skip else 0), max(fan_in))
    b0 = torch.empty(m, sizes[0], 1)
    for i, d in enumerate(fan_in):
        bound = 1.0 / float(np.sqrt(d))
        first[i, :sizes[0], :d] = _uniform(d, sizes[0], bound, gen).T
        b0[i] = _uniform(1, sizes[0], bound, gen).T
    rest = [b0]
    for h_in, h_out in itertools.pairwise(sizes):
        bound = 1.0 / float(np.sqrt(h_in))
        rest += [torch.stack([_uniform(h_in, h_out, bound, gen).T for _ in range(m)]),
                 torch.stack([_uniform(1, h_out, bound, gen).T for _ in range(m)])]
    if hidden:                                     # the head's rows in training order
        rest[-2:] = [p.index_select(1, rows) for p in rest[-2:]]
    else:
        first, rest[0] = first.index_select(1, rows), rest[0].index_select(1, rows)
    return _Stack(first.contiguous(), [p.contiguous() for p in rest],
                  hidden[0] if hidden else 0, skip, list(fan_in), order)


class _AdamW:
    """AdamW (torch's update rule, decoupled weight decay) on a list of tensors, through
    torch's fused kernel (one call per step; torch.optim.AdamW(fused=True) runs the same)."""

    def __init__(self, params: list[torch.Tensor], *, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.wd, self.betas, self.eps = params, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), device=p.device) for p in params]

    def select(self, params: list[torch.Tensor], keep: torch.Tensor) -> None:
        """Go on with ``params`` (the members where ``keep`` is True), moments kept."""
        self.params = params
        self.m = [t[keep] for t in self.m]
        self.v = [t[keep] for t in self.v]

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        torch._foreach_add_(self.steps, 1.0)
        torch._fused_adamw_(self.params, grads, self.m, self.v, [], self.steps, lr=lr,
                            beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.wd,
                            eps=self.eps, amsgrad=False, maximize=False)


def _one_cycle(step: int, warmup: int, total: int, lr: float) -> float:
    """Linear warm-up from lr / 10 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return lr * (0.1 + 0.9 * step / warmup)
    done = (step - warmup) / max(total - warmup, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def _padded(xs: Sequence[torch.Tensor], rows: torch.Tensor | None = None, extra: int = 0
            ) -> torch.Tensor:
    """n x M x (Dmax + extra): the members' inputs (N x D_i each; the ``rows`` of them if
    given), zero-padded to the widest, sample by sample (so that a shuffle or a split
    gathers whole rows); the last ``extra`` columns are left for the caller to fill."""
    width = max(x.shape[1] for x in xs)
    n = xs[0].shape[0] if rows is None else len(rows)
    out = xs[0].new_empty(n, len(xs), width + extra)
    for i, x in enumerate(xs):
        out[:, i, :x.shape[1]] = x if rows is None else x.index_select(0, rows)
        out[:, i, x.shape[1]:width] = 0.0
    return out


@torch.no_grad()
def fit_mlps(xs: Sequence[torch.Tensor], targets: Targets, train: np.ndarray, val: np.ndarray,
             layout: HeadLayout, settings: DecoderSettings, *,
             init: Sequence[dict[str, np.ndarray]] | None = None,
             bases: Sequence[torch.Tensor | None] | None = None, keep: Sequence[int] = (),
             projected: Sequence[torch.Tensor] | None = None,
             ) -> tuple[list[dict[str, np.ndarray]], list[int], list[dict[str, list[float]]]]:
    """Train M decoder MLPs together; early stopping per member on its validation loss.

    A member leaves the batch when it stops (``patience`` epochs without a lower
    validation loss) and, after ``settings.prune_after`` epochs, unless it is among the
    ``settings.prune_keep`` members with the lowest validation loss of some concept (or
    listed in ``keep``): successive halving, so that layers that cannot be chosen for any
    concept stop early and keep their best state so far.

    Parameters
    ----------
    xs : list of N x D_i float32 tensors
        Standardised features of each member.
    targets : Targets
        Codes and sample weights of each member (M x N x C).
    train, val : int arrays
        Row indices of the training and validation splits.
    layout, settings
        Head layout; hidden sizes, dropout, lr, weight decay, epochs, patience, batch size.
    init : list of dict, optional
        Linear probes (``head.weight``, ``head.bias``) of each member. With hidden layers
        and a linear path, the linear path is the probe, kept fixed, and the hidden layers
        learn what it misses (their head starts at zero, so epoch 0 is the probe);
        without hidden layers the decoder is the probe. Ignored with hidden layers but no
        linear path.
    bases : list of (D_i x k tensor or None), optional
        With ``init``: the hidden layers read the inputs projected on these bases (e.g.
        :func:`principal_bases`); the projection is folded into ``trunk.0.weight``.
    projected : list of N x k tensors, optional
        ``xs`` already projected on ``bases`` (shared by calls on the same layers).

    Returns
    -------
    weights : list of dict
        Each member's weights at its best validation epoch (numpy, out x in).
    epochs : list of int
        The best epoch of each member (0: the starting point was best).
    history : list of dict
        Per member, the training curve: ``epoch``, ``train_loss`` (mean over the epoch's
        batches, with dropout) and ``val_loss`` (epoch 0: the starting point).
    """
    device = xs[0].device
    m = len(xs)
    hidden = list(settings.hidden)
    if init is not None and not hidden:
        return ([{k: v.copy() for k, v in p.items()} for p in init], [0] * m,
                [{"epoch": [], "train_loss": [], "val_loss": []} for _ in range(m)])
    gen = torch.Generator().manual_seed(settings.seed)
    offset = None
    if init is not None and settings.linear_skip:
        bases = list(bases) if bases is not None else [None] * m
        inputs = (list(projected) if projected is not None else
                  [x if b is None else x @ b for x, b in zip(xs, bases, strict=True)])
        net = _init_stack([x.shape[1] for x in inputs], layout, hidden, False, gen)
        rows = torch.as_tensor(net.order.rows, device=device)
        offset = torch.stack([torch.addmm(torch.from_numpy(p["head.bias"]).to(device)[:, None],
                                          torch.from_numpy(p["head.weight"]).to(device), x.T)
                              .index_select(0, rows)
                              for x, p in zip(xs, init, strict=True)])     # M x width x N
        net.rest[-2:] = [torch.zeros_like(net.rest[-2]), torch.zeros_like(net.rest[-1])]
        net.bases, net.linear = bases, init
    else:
        inputs = list(xs)
        net = _init_stack([x.shape[1] for x in xs], layout, hidden,
                          settings.linear_skip and bool(hidden), gen)
    order = net.order
    net.first = net.first.to(device)
    net.rest = [p.to(device) for p in net.rest]
    opt = _AdamW(net.params, weight_decay=settings.weight_decay)
    # Inputs and targets of the training and validation rows side by side, sample-major
    # (n x M x (Dmax + F)): a shuffle is one gather of whole rows.
    tv = torch.as_tensor(np.concatenate([train, val]), device=device)
    labels = _Labels.of(targets, order, offset, rows=tv)
    dmax = max(x.shape[1] for x in inputs)
    packed = _padded(inputs, tv, extra=labels.packed.shape[2])
    packed[:, :, dmax:] = labels.packed
    del inputs, offset
    sizes = labels.sizes

    def split(rows: torch.Tensor) -> tuple[torch.Tensor, _Batch]:
        """Inputs (n x M x Dmax) and targets of packed rows."""
        return rows[:, :, :dmax], _Labels(rows[:, :, dmax:], sizes).batch()

    n_tr = len(train)
    p_tr, p_va = packed[:n_tr], packed[n_tr:]
    x_va, b_va = split(p_va)
    batch = n_tr if settings.batch_size is None else min(settings.batch_size, n_tr)
    steps = math.ceil(n_tr / batch)
    total = steps * settings.max_epochs
    dropout_gen = gen if settings.dropout > 0 else None

    best_concept = _concept_losses(net.forward(x_va, b_va.offset), b_va, order)    # M x C
    if not sizes[0]:                    # not started from the probe: epoch 0 is no candidate
        best_concept.fill_(float("inf"))
    best_loss = best_concept.sum(dim=1)
    best_epoch = torch.zeros(m, dtype=torch.long, device=device)
    best = net.clone()
    history: list[dict[str, list[float]]] = [
        {"epoch": [], "train_loss": [], "val_loss": []} for _ in range(m)]
    if sizes[0]:
        for i, h in enumerate(history):
            h["epoch"].append(0)
            h["train_loss"].append(math.nan)
            h["val_loss"].append(float(best_loss[i]))
    members = torch.arange(m, device=device)          # the members still training
    step = 0
    for epoch in range(1, settings.max_epochs + 1):
        train_sum = torch.zeros(len(members), device=device)
        if batch == n_tr:
            pe = p_tr
        else:
            pe = torch.index_select(p_tr, 0, torch.randperm(n_tr, generator=gen).to(device))
        for start in range(0, n_tr, batch):
            xb, bb = split(pe[start:start + batch])
            z, cache = net.forward(xb, bb.offset, dropout=settings.dropout, gen=dropout_gen,
                                   keep=True)
            loss, dz = _concept_losses(z, bb, order, grad=True)
            opt.step(net.backward(cache, dz), _one_cycle(step, steps, total, settings.lr))
            step += 1
            train_sum.add_(loss.sum(dim=1), alpha=xb.shape[0])
        val_concept = _concept_losses(net.forward(x_va, b_va.offset), b_va, order)
        val_loss = val_concept.sum(dim=1)
        for k, i in enumerate(members.tolist()):
            history[i]["epoch"].append(epoch)
            history[i]["train_loss"].append(float(train_sum[k] / n_tr))
            history[i]["val_loss"].append(float(val_loss[k]))
        better = val_loss < best_loss[members]
        if better.any():
            best_loss[members[better]] = val_loss[better]
            best_concept[members[better]] = val_concept[better]
            best_epoch[members[better]] = epoch
            best.copy_from(net, members, better)
        going = epoch - best_epoch[members] < settings.patience
        if settings.prune_after is not None and epoch == settings.prune_after:
            going &= _leading(best_concept, settings.prune_keep, keep)[members]
        if not bool(going.all()):
            members = members[going]
            if not len(members):
                break
            net = net.select(going)
            opt.select(net.params, going)
            p_tr, p_va = p_tr[:, going], p_va[:, going]
            x_va, b_va = split(p_va)
    return [best.export(i) for i in range(m)], best_epoch.tolist(), history


def _leading(concept_losses: torch.Tensor, top: int, keep: Sequence[int]) -> torch.Tensor:
    """(M,) bool: members among the ``top`` lowest losses of some concept (M x C; ties
    to the later member), or listed in ``keep``."""
    m = concept_losses.shape[0]
    losses = concept_losses.detach().cpu().numpy()
    out = np.zeros(m, dtype=bool)
    for c in range(losses.shape[1]):
        order = np.lexsort((-np.arange(m), losses[:, c]))   # by loss, ties: later first
        out[order[:top]] = True
    out[list(keep)] = True
    return torch.as_tensor(out, device=concept_losses.device)


@torch.no_grad()
def logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """:func:`audit.decode.model.forward_logits` in torch (faster for training-time metrics)."""
    p = {k: torch.from_numpy(v) for k, v in params.items()}
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    h, i = xt, 0
    while f"trunk.{i}.weight" in p:
        h = torch.relu(torch.addmm(p[f"trunk.{i}.bias"], h, p[f"trunk.{i}.weight"].T))
        i += 1
    out = torch.addmm(p["head.bias"], h, p["head.weight"].T)
    if "skip.weight" in p:
        out = out.addmm_(xt, p["skip.weight"].T)
    return out.numpy()
