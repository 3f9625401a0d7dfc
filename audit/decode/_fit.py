"""Training in torch: many decoder MLPs at once, and batched logistic-regression probes.

Imported only when decoders are trained (``gan-audit --help`` never imports torch).

Members are independent models stacked along a leading dimension M (one per layer, or
per chosen layer for the control task) and trained together: the products with the
inputs (whose widths differ) run per member, everything after them batched.

Two solvers, both without ``torch.optim`` (whose first use imports ``torch._dynamo``,
seconds of start-up on a CPU):

- :func:`fit_probes`: L2-regularised logistic regression with scikit-learn's objective,
  every (member, concept) problem solved at once by a batched L-BFGS with its own
  history, scaling, line search and stopping per problem;
- :func:`fit_mlps`: minibatch AdamW with a one-cycle schedule (linear warm-up over the
  first epoch, cosine decay to zero at ``max_epochs``), optionally started from the
  probes (linear path = probe, hidden-to-head weights = 0), with early stopping per
  member on the validation loss checked after every epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
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

    def members(self, idx: Sequence[int] | torch.Tensor) -> Targets:
        """The members ``idx`` (indices, or a bool mask over M)."""
        sel = idx if isinstance(idx, torch.Tensor) else list(idx)
        return Targets(self.codes[sel], self.weights[sel])


def _concept_losses(logits: torch.Tensor, t: Targets, layout: HeadLayout, *,
                    grad: bool = False) -> Any:
    """Loss per member and concept (M x C): the concept's weighted mean loss.

    A concept's mean runs over its labelled rows only, so a missing label changes no
    other concept's loss, and a concept without labels contributes 0. With ``grad``,
    also the gradient of the summed losses with respect to ``logits`` (M x n x width),
    in closed form: ``w (sigmoid(z) - y) / count`` for binary concepts and
    ``w (softmax(z) - onehot(y)) / count`` for multiclass ones.
    """
    m = logits.shape[0]
    count = (t.codes >= 0).sum(dim=1, keepdim=True).clamp(min=1).to(logits.dtype)
    scale = t.weights / count                                      # M x n x C
    out = logits.new_zeros(m, len(layout.names))
    d = torch.empty_like(logits) if grad else None
    if layout.binary:
        b = layout.binary
        cols = [layout.starts[j] for j in b]
        z = logits[:, :, cols]
        y = t.codes[:, :, b].clamp(min=0).to(logits.dtype)
        sb = scale[:, :, b]
        loss = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        out[:, b] = (loss * sb).sum(dim=1)
        if d is not None:
            d[:, :, cols] = (torch.sigmoid(z) - y) * sb
    for j in layout.multiclass:
        sl = layout.slice(j)
        y = t.codes[:, :, j:j + 1].clamp(min=0)
        logp = torch.log_softmax(logits[:, :, sl], dim=2)
        out[:, j] = -(logp.gather(2, y)[:, :, 0] * scale[:, :, j]).sum(dim=1)
        if d is not None:
            p = logp.exp_()
            p.scatter_add_(2, y, p.new_full(y.shape, -1.0))
            d[:, :, sl] = p * scale[:, :, j:j + 1]
    return (out, d) if grad else out


def _member_losses(logits: torch.Tensor, t: Targets, layout: HeadLayout) -> torch.Tensor:
    """Loss per member (M,): the sum over concepts of :func:`_concept_losses`."""
    return _concept_losses(logits, t, layout).sum(dim=1)


# ----------------------------------------------------------------------------- probes


class _Columns:
    """Per-concept reductions over the logit rows of M x width x ... tensors."""

    def __init__(self, layout: HeadLayout, device: torch.device, dtype: torch.dtype) -> None:
        g = torch.zeros(layout.width, len(layout.names), dtype=dtype, device=device)
        for j in range(len(layout.names)):
            g[layout.slice(j), j] = 1.0
        self.g = g                                  # width x C indicator
        self.slices = [layout.slice(j) for j in range(len(layout.names))]

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-problem inner products (M x C) of M x width x D tensors."""
        return (a * b).sum(dim=2) @ self.g

    def spread(self, s: torch.Tensor) -> torch.Tensor:
        """M x C -> M x width x 1 (each concept's value on its rows)."""
        return (s @ self.g.T)[:, :, None]

    def amax(self, a: torch.Tensor) -> torch.Tensor:
        """Per-problem max |a| (M x C) of an M x width x D tensor."""
        m = a.abs().amax(dim=2)
        return torch.stack([m[:, sl].amax(dim=1) for sl in self.slices], dim=1)


@dataclass
class _ProbeData:
    """A probe problem set: per-member design matrices with a column of ones, targets."""

    x1: list[torch.Tensor]            # n x (D_i + 1) per member
    x1t: list[torch.Tensor]           # the same, transposed and contiguous
    y: torch.Tensor                   # M x width x n: binary target / one-hot
    known: torch.Tensor               # M x C x n
    n_known: torch.Tensor             # M x C
    pen: torch.Tensor                 # M x 1 x (Dmax + 1): 1 on penalised weights
    layout: HeadLayout
    cols: _Columns

    def loss_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective per problem (M x C) and its gradient (M x width x (Dmax + 1)).

        Objective of a problem: mean log-loss over its labelled rows + ||w||^2 / (2 n), the
        intercept unpenalised (scikit-learn's ``C = 1``).
        """
        z = torch.stack([theta[i, :, :x.shape[0]] @ x for i, x in enumerate(self.x1t)])
        r = torch.empty_like(z)                                  # M x width x n
        loss = []
        for j, kind in enumerate(self.layout.kinds):
            sl = self.layout.slice(j)
            zj, yj, kj = z[:, sl], self.y[:, sl], self.known[:, j:j + 1]
            if kind == "binary":
                lj = F.softplus(zj) - yj * zj
                r[:, sl] = (torch.sigmoid(zj) - yj) * kj
            else:
                lse = torch.logsumexp(zj, dim=1, keepdim=True)
                lj = lse - (yj * zj).sum(dim=1, keepdim=True)
                r[:, sl] = (torch.exp(zj - lse) - yj) * kj
            loss.append((lj * kj).sum(dim=(1, 2)))
        col_n = (self.n_known @ self.cols.g.T)[:, :, None]          # M x width x 1
        r = r / col_n
        grad = theta * self.pen / col_n
        for i, x in enumerate(self.x1):
            grad[i, :, :x.shape[1]] += r[i] @ x
        obj = (torch.stack(loss, dim=1)
               + 0.5 * self.cols.dot(theta * self.pen, theta)) / self.n_known
        return obj, grad


def gram_matrices(xs: Sequence[torch.Tensor], rows: np.ndarray) -> list[torch.Tensor]:
    """Per member, the second moments ``X1'X1 / n`` of its training ``rows`` with a
    column of ones (float64).

    (D_i + 1) x (D_i + 1); the last row and column belong to the intercept.
    """
    idx = torch.as_tensor(rows, device=xs[0].device)
    out = []
    for x in xs:
        x1 = torch.cat([x[idx], x.new_ones(len(rows), 1)], dim=1)
        out.append((x1.T @ x1).double() / len(rows))
    return out


def probe_preconditioners(grams: Sequence[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Per member, the inverse of the logistic Hessian bound ``X1'X1 / 4n + I / n``.

    ``grams`` from :func:`gram_matrices` (second moments), ``n`` training rows; the
    intercept is not penalised. Float32 results, computed in float64. Shared by every
    probe fit on the same features (the real and the control task).
    """
    out = []
    for gram in grams:
        bound = gram / 4.0
        bound.diagonal()[:-1] += 1.0 / n
        out.append(torch.cholesky_inverse(torch.linalg.cholesky(bound)).float())
    return out


def principal_bases(grams: Sequence[torch.Tensor], k: int | None, *, seed: int = 0,
                    ) -> list[torch.Tensor | None]:
    """Per member, a D_i x k orthonormal basis of its top-k principal components.

    From the uncentred second moments of standardised (so centred) features, by
    randomised subspace iteration (seeded). ``None`` where D_i <= k or ``k`` is None.
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor | None] = []
    for gram in grams:
        g = gram[:-1, :-1]
        d = g.shape[0]
        if k is None or d <= k:
            out.append(None)
            continue
        q = torch.randn(d, min(k + 10, d), generator=gen, dtype=g.dtype).to(g.device)
        for _ in range(4):
            q, _ = torch.linalg.qr(g @ q)
        _, vecs = torch.linalg.eigh(q.T @ g @ q)
        out.append((q @ vecs[:, -k:]).float())
    return out


def fit_probes(xs: Sequence[torch.Tensor], targets: Targets, train: np.ndarray,
               layout: HeadLayout, *, max_iter: int = 100, tol: float = 1e-4, history: int = 10,
               precond: Sequence[torch.Tensor] | None = None,
               init: Sequence[dict[str, np.ndarray]] | None = None,
               ) -> list[dict[str, np.ndarray]]:
    """L2-regularised logistic regression per member and concept (scikit-learn's objective).

    Minimises, for every member and concept, the mean log-loss over its labelled training
    rows plus ``||w||^2 / (2 n)`` with an unpenalised intercept: ``LogisticRegression()``'s
    objective (C = 1, multinomial for multiclass concepts), to the same tolerance
    (max |gradient| <= ``tol``) in at most ``max_iter`` iterations. All problems run at once
    in a batched L-BFGS with its own history, scaling, step and stopping per problem,
    whose initial inverse Hessian is :func:`probe_preconditioners`' (computed here unless
    given).

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

    Returns
    -------
    list of dict
        Each member's ``head.weight`` (width x D_i) and ``head.bias`` (width,).
    """
    device, dtype = xs[0].device, xs[0].dtype
    m, n, c = len(xs), len(train), len(layout.names)
    tr = torch.as_tensor(train, device=device)
    x1 = [torch.cat([x[tr], x.new_ones(n, 1)], dim=1) for x in xs]
    d1 = max(x.shape[1] for x in x1)
    codes = targets.codes[:, tr].transpose(1, 2)                       # M x C x n
    known = (codes >= 0).to(dtype)
    y = torch.zeros(m, layout.width, n, dtype=dtype, device=device)
    for j, kind in enumerate(layout.kinds):
        if kind == "binary":
            y[:, layout.starts[j]] = (codes[:, j] == 1).to(dtype)
        else:
            y[:, layout.slice(j)] = F.one_hot(codes[:, j].clamp(min=0),
                                              layout.widths[j]).to(dtype).transpose(1, 2)
    pen = torch.zeros(m, 1, d1, dtype=dtype, device=device)
    for i, x in enumerate(x1):
        pen[i, 0, :x.shape[1] - 1] = 1.0                                 # not the intercept
    cols = _Columns(layout, device, dtype)
    data = _ProbeData(x1, [x.T.contiguous() for x in x1], y, known,
                      known.sum(dim=2).clamp(min=1.0), pen, layout, cols)

    pre = (list(precond) if precond is not None
           else probe_preconditioners(gram_matrices(xs, train), len(train)))

    def apply_pre(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for i, p in enumerate(pre):
            out[i, :, :p.shape[0]] = v[i, :, :p.shape[0]] @ p
        return out

    theta = torch.zeros(m, layout.width, d1, dtype=dtype, device=device)
    for i, p in enumerate(init or ()):
        d = p["head.weight"].shape[1]
        theta[i, :, :d] = torch.as_tensor(p["head.weight"], device=device)
        theta[i, :, d] = torch.as_tensor(p["head.bias"], device=device)
    f, g = data.loss_grad(theta)
    hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    gamma = torch.ones(m, c, dtype=dtype, device=device)
    for _ in range(max_iter):
        active = cols.amax(g) > tol
        if not bool(active.any()):
            break
        # Two-loop recursion, per problem.
        q = g.clone()
        alphas = []
        for s, yv, rho in reversed(hist):
            a = rho * cols.dot(s, q)
            alphas.append(a)
            q = q - cols.spread(a) * yv
        d = apply_pre(q) * cols.spread(gamma)
        for (s, yv, rho), a in zip(hist, reversed(alphas), strict=True):
            d = d + cols.spread(a - rho * cols.dot(yv, d)) * s
        d = -d * cols.spread(active.to(dtype))
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
    return [{"head.weight": theta[i, :, :x.shape[1] - 1].contiguous().cpu().numpy(),
             "head.bias": theta[i, :, x.shape[1] - 1].contiguous().cpu().numpy()}
            for i, x in enumerate(x1)]


# ------------------------------------------------------------------------------ MLPs


def _uniform(rows: int, cols: int, bound: float, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(rows, cols).uniform_(-bound, bound, generator=gen)


@dataclass
class _Stack:
    """M MLPs batched along a leading dimension, with a hand-written backward pass.

    ``first`` is M x Dmax x (H0 + S): each member's first hidden layer's weights, then
    (S = width when there is a linear path) the linear path's; without hidden layers it
    is the head (M x Dmax x width). Members whose inputs are narrower than Dmax read
    zero-padded inputs; their padded rows get no gradient and are dropped on export
    (``fan_in``). ``rest`` is [b0, (W, b) per further hidden layer, W_head, b_head]
    (M x ...), or [b_head] without hidden layers.

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
    bases: Sequence[torch.Tensor | None] | None = None
    linear: Sequence[dict[str, np.ndarray]] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.first, *self.rest]

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None, *,
                dropout: float = 0.0, gen: torch.Generator | None = None,
                keep: bool = False) -> Any:
        """Logits M x n x width of inputs ``x`` (M x n x Dmax), + ``offset``.

        Dropout (after each hidden layer) when ``gen`` is given. With ``keep``, returns
        ``(logits, cache)`` for :meth:`backward`.
        """
        a = torch.bmm(x, self.first)
        hs: list[torch.Tensor] = []
        masks: list[torch.Tensor | None] = []
        if not self.h0:
            out = a + self.rest[0]
        else:
            h = torch.relu_(a[:, :, :self.h0] + self.rest[0])
            for i in range(1, len(self.rest), 2):
                mask = None
                if gen is not None and dropout > 0:
                    mask = torch.empty_like(h).bernoulli_(1.0 - dropout, generator=gen)
                    mask.div_(1.0 - dropout)
                    h = h * mask
                hs.append(h)
                masks.append(mask)
                out = torch.baddbmm(self.rest[i + 1], h, self.rest[i])
                if i + 2 < len(self.rest):
                    h = torch.relu_(out)
            if self.skip:
                out = out + a[:, :, self.h0:]
        if offset is not None:
            out = out + offset
        return (out, (x, hs, masks)) if keep else out

    def backward(self, cache: tuple[Any, ...], dz: torch.Tensor) -> list[torch.Tensor]:
        """Gradients (in :attr:`params` order) of a loss whose gradient with respect to the
        logits of :meth:`forward` (``keep=True``) is ``dz`` (M x n x width)."""
        x, hs, masks = cache
        grads: list[torch.Tensor] = [dz] * len(self.rest)
        if not self.h0:
            grads[0] = dz.sum(dim=1, keepdim=True)
            da = dz
        else:
            g = dz
            for k in reversed(range(len(hs))):
                grads[2 * k + 1] = torch.bmm(hs[k].transpose(1, 2), g)
                grads[2 * k + 2] = g.sum(dim=1, keepdim=True)
                dh = torch.bmm(g, self.rest[2 * k + 1].transpose(1, 2))
                if masks[k] is not None:
                    dh = dh * masks[k]
                g = dh * (hs[k] > 0)
            grads[0] = g.sum(dim=1, keepdim=True)
            da = torch.cat([g, dz], dim=2) if self.skip else g
        return [torch.bmm(x.transpose(1, 2), da), *grads]

    def clone(self) -> _Stack:
        return self.select(torch.ones(len(self.fan_in), dtype=torch.bool))

    def select(self, keep: torch.Tensor) -> _Stack:
        """A copy of the members where the bool mask ``keep`` (M,) is True."""
        idx = torch.nonzero(keep).flatten().tolist()
        return _Stack(self.first[keep].clone(), [p[keep].clone() for p in self.rest], self.h0,
                      self.skip, [self.fan_in[i] for i in idx],
                      None if self.bases is None else [self.bases[i] for i in idx],
                      None if self.linear is None else [self.linear[i] for i in idx])

    def copy_from(self, src: _Stack, members: torch.Tensor, mask: torch.Tensor) -> None:
        """Members ``members[k]`` of this stack take ``src``'s member k where ``mask[k]``."""
        for b, p in zip(self.params, src.params, strict=True):
            b[members[mask]] = p[mask]

    def export(self, i: int) -> dict[str, np.ndarray]:
        """Member ``i``'s weights as numpy, torch nn.Linear convention (out x in)."""
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.contiguous().cpu().numpy().astype(np.float32)

        first = self.first[i, :self.fan_in[i]]
        if not self.h0:
            return {"head.weight": arr(first.T), "head.bias": arr(self.rest[0][i, 0])}
        w0 = first[:, :self.h0]
        if self.bases is not None and self.bases[i] is not None:
            w0 = self.bases[i] @ w0
        out = {"trunk.0.weight": arr(w0.T), "trunk.0.bias": arr(self.rest[0][i, 0])}
        n_trunk = (len(self.rest) - 1) // 2
        for k in range(1, n_trunk + 1):
            name = f"trunk.{k}" if k < n_trunk else "head"
            out[f"{name}.weight"] = arr(self.rest[2 * k - 1][i].T)
            out[f"{name}.bias"] = arr(self.rest[2 * k][i, 0])
        if self.skip:
            out["skip.weight"] = arr(first[:, self.h0:].T)
        if self.linear is not None:
            out["skip.weight"] = self.linear[i]["head.weight"].astype(np.float32)
            out["head.bias"] = out["head.bias"] + self.linear[i]["head.bias"]
        return out


def _init_stack(fan_in: Sequence[int], layout: HeadLayout, hidden: Sequence[int], skip: bool,
                gen: torch.Generator) -> _Stack:
    """torch's nn.Linear initialisation per member; the linear path (``skip``) starts at 0."""
    m, width = len(fan_in), layout.width
    sizes = [*hidden, width]
    first = torch.zeros(m, max(fan_in), sizes[0] + (width if skip else 0))
    b0 = torch.empty(m, 1, sizes[0])
    for i, d in enumerate(fan_in):
        bound = 1.0 / float(np.sqrt(d))
        first[i, :d, :sizes[0]] = _uniform(d, sizes[0], bound, gen)
        b0[i] = _uniform(1, sizes[0], bound, gen)
    rest = [b0]
    for h_in, h_out in itertools.pairwise(sizes):
        bound = 1.0 / float(np.sqrt(h_in))
        rest += [torch.stack([_uniform(h_in, h_out, bound, gen) for _ in range(m)]),
                 torch.stack([_uniform(1, h_out, bound, gen) for _ in range(m)])]
    return _Stack(first, rest, hidden[0] if hidden else 0, skip, list(fan_in))


class _AdamW:
    """AdamW (torch's update rule, decoupled weight decay) on a list of tensors."""

    def __init__(self, params: list[torch.Tensor], *, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.wd, self.betas, self.eps = params, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def select(self, params: list[torch.Tensor], keep: torch.Tensor) -> None:
        """Go on with ``params`` (the members where ``keep`` is True), moments kept."""
        self.params = params
        self.m = [t[keep] for t in self.m]
        self.v = [t[keep] for t in self.v]

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        torch._foreach_mul_(self.params, 1.0 - lr * self.wd)
        torch._foreach_lerp_(self.m, grads, 1.0 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1.0 - b2)
        denom = torch._foreach_div(self.v, c2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-lr / c1)


def _one_cycle(step: int, warmup: int, total: int, lr: float) -> float:
    """Linear warm-up from lr / 10 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return lr * (0.1 + 0.9 * step / warmup)
    done = (step - warmup) / max(total - warmup, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def _padded(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """M x N x Dmax: the members' inputs (N x D_i each), zero-padded to the widest."""
    width = max(x.shape[1] for x in xs)
    out = xs[0].new_zeros(len(xs), xs[0].shape[0], width)
    for i, x in enumerate(xs):
        out[i, :, :x.shape[1]] = x
    return out


@torch.no_grad()
def fit_mlps(xs: Sequence[torch.Tensor], targets: Targets, train: np.ndarray, val: np.ndarray,
             layout: HeadLayout, settings: DecoderSettings, *,
             init: Sequence[dict[str, np.ndarray]] | None = None,
             bases: Sequence[torch.Tensor | None] | None = None, keep: Sequence[int] = (),
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
        inputs = [x if b is None else x @ b for x, b in zip(xs, bases, strict=True)]
        offset = torch.stack([torch.addmm(torch.from_numpy(p["head.bias"]).to(device), x,
                                          torch.from_numpy(p["head.weight"]).to(device).T)
                              for x, p in zip(xs, init, strict=True)])      # M x N x width
        net = _init_stack([x.shape[1] for x in inputs], layout, hidden, False, gen)
        net.rest[-2:] = [torch.zeros_like(net.rest[-2]), torch.zeros_like(net.rest[-1])]
        net.bases, net.linear = bases, init
    else:
        inputs = list(xs)
        net = _init_stack([x.shape[1] for x in xs], layout, hidden,
                          settings.linear_skip and bool(hidden), gen)
    net.first = net.first.to(device)
    net.rest = [p.to(device) for p in net.rest]
    opt = _AdamW(net.params, weight_decay=settings.weight_decay)
    x_all = _padded(inputs)
    del inputs
    tr = torch.as_tensor(train, device=device)
    va = torch.as_tensor(val, device=device)

    def rows(idx: torch.Tensor) -> tuple[torch.Tensor, Targets, torch.Tensor | None]:
        return (torch.index_select(x_all, 1, idx), targets.rows(idx),
                None if offset is None else torch.index_select(offset, 1, idx))

    x_tr, t_tr, o_tr = rows(tr)
    x_va, t_va, o_va = rows(va)
    n_tr = len(train)
    batch = n_tr if settings.batch_size is None else min(settings.batch_size, n_tr)
    steps = math.ceil(n_tr / batch)
    total = steps * settings.max_epochs
    dropout_gen = gen if settings.dropout > 0 else None

    best_concept = _concept_losses(net.forward(x_va, o_va), t_va, layout)     # M x C
    if offset is None:                  # not started from the probe: epoch 0 is no candidate
        best_concept.fill_(float("inf"))
    best_loss = best_concept.sum(dim=1)
    best_epoch = torch.zeros(m, dtype=torch.long, device=device)
    best = net.clone()
    history: list[dict[str, list[float]]] = [
        {"epoch": [], "train_loss": [], "val_loss": []} for _ in range(m)]
    if offset is not None:
        for i, h in enumerate(history):
            h["epoch"].append(0)
            h["train_loss"].append(math.nan)
            h["val_loss"].append(float(best_loss[i]))
    members = torch.arange(m, device=device)          # the members still training
    step = 0
    for epoch in range(1, settings.max_epochs + 1):
        a = len(members)
        train_sum = torch.zeros(a, device=device)
        if batch == n_tr:
            xe, te, oe = x_tr, t_tr, o_tr
        else:
            order = torch.randperm(n_tr, generator=gen).to(device)
            xe = torch.index_select(x_tr, 1, order)
            te = t_tr.rows(order)
            oe = None if o_tr is None else torch.index_select(o_tr, 1, order)
        for start in range(0, n_tr, batch):
            sl = slice(start, start + batch)
            z, cache = net.forward(xe[:, sl], None if oe is None else oe[:, sl],
                                   dropout=settings.dropout, gen=dropout_gen, keep=True)
            loss, dz = _concept_losses(z, Targets(te.codes[:, sl], te.weights[:, sl]), layout,
                                       grad=True)
            opt.step(net.backward(cache, dz), _one_cycle(step, steps, total, settings.lr))
            step += 1
            train_sum += loss.sum(dim=1) * len(range(n_tr)[sl])
        val_concept = _concept_losses(net.forward(x_va, o_va), t_va, layout)
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
            x_tr, x_va = x_tr[going], x_va[going]
            t_tr, t_va = t_tr.members(going), t_va.members(going)
            if o_tr is not None:
                o_tr, o_va = o_tr[going], o_va[going]
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
