"""Training in torch: many decoder MLPs at once (the linear probes: :mod:`audit.decode._lbfgs`).

Imported only when decoders are trained (``gan-audit --help`` never imports torch).

Members are independent models stacked along a leading dimension M (one per layer, or
per chosen layer for the control task) and trained together: the products with the
inputs (whose widths differ) run per member, everything after them batched.

:func:`fit_mlps`: minibatch ``torch.optim.AdamW`` (fused) with a one-cycle schedule
(linear warm-up over the first epoch, cosine decay to zero at ``max_epochs``), optionally
started from the probes (linear path = probe, hidden-to-head weights = 0), with early
stopping per member on the validation loss checked after every epoch. The networks run
feature-major (M x features x n) with a hand-written backward pass (:class:`_Stack`),
which ``tests/test_decode_train.py`` checks against autograd. Why not autograd (measured,
issue #20, one CPU thread, ``benchmarks/decoders.py``'s 5,000-image store): with autograd
:func:`fit_mlps` took 0.156 s CPU against 0.115 s (1.36x, the same best epochs and
validation losses to 1e-5). That is under the 1.5x at which the issue allows a
hand-written piece, but it alone took the decoder benchmark from 5.3x to 4.7x
scikit-learn's speed (CPU time; 4.0x wall clock), below the benchmark's goal of 5x, so
the backward pass stays written out; the optimiser is torch's. At these sizes a CPU
spends more time dispatching small operations (autograd's bookkeeping among them) than
computing.
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

__all__ = ["Targets", "fit_mlps", "logits", "principal_bases"]


@dataclass
class Targets:
    """Per-member labels: codes M x N x C (long, -1 missing), sample weights M x N x C."""

    codes: torch.Tensor
    weights: torch.Tensor

    def rows(self, idx: torch.Tensor) -> Targets:
        return Targets(self.codes[:, idx], self.weights[:, idx])



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


def _adamw_select(opt: Any, params: list[torch.Tensor], keep: torch.Tensor) -> Any:
    """A torch.optim.AdamW on ``params`` (the members where ``keep`` is True of ``opt``'s),
    its moments and step counts kept."""
    d = opt.defaults
    new = torch.optim.AdamW(params, lr=d["lr"], betas=d["betas"], eps=d["eps"],
                            weight_decay=d["weight_decay"], fused=d["fused"])
    new.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for old, p in zip(opt.param_groups[0]["params"], params, strict=True):
        state = opt.state.get(old)
        if state:
            new.state[p] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"][keep],
                            "exp_avg_sq": state["exp_avg_sq"][keep]}
    return new


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
    m = len(xs)
    if init is not None and not settings.hidden:
        return ([{k: v.copy() for k, v in p.items()} for p in init], [0] * m,
                [{"epoch": [], "train_loss": [], "val_loss": []} for _ in range(m)])
    gen = torch.Generator().manual_seed(settings.seed)
    net, inputs, offset = _network(xs, layout, settings, gen, init, bases, projected)
    run = _Run.start(net, inputs, offset, targets, train, val, settings, gen)
    for epoch in range(1, settings.max_epochs + 1):
        run.epoch(epoch)
        if not run.keep_going(epoch, keep):
            break
    return [run.best.export(i) for i in range(m)], run.best_epoch.tolist(), run.history


def _network(xs: Sequence[torch.Tensor], layout: HeadLayout, settings: DecoderSettings,
             gen: torch.Generator, init: Sequence[dict[str, np.ndarray]] | None,
             bases: Sequence[torch.Tensor | None] | None,
             projected: Sequence[torch.Tensor] | None,
             ) -> tuple[_Stack, list[torch.Tensor], torch.Tensor | None]:
    """The initial stack of :func:`fit_mlps`, the inputs its first layer reads and the
    fixed offset logits (M x width x N, training order; the probes' logits where the
    linear path is the probe, else None)."""
    device, m, hidden = xs[0].device, len(xs), list(settings.hidden)
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
    net.first = net.first.to(device)
    net.rest = [p.to(device) for p in net.rest]
    return net, inputs, offset


@dataclass
class _Run:
    """The state of a :func:`fit_mlps` run: the members still training (``members``, their
    stack ``net`` and optimiser ``opt``), their packed training and validation rows (n x M
    x (Dmax + F), :class:`_Labels`), and per member the best state so far (``best``, its
    epoch, its validation loss in total and per concept) and the training curves."""

    net: _Stack
    opt: Any
    p_tr: torch.Tensor
    p_va: torch.Tensor
    dmax: int
    sizes: tuple[int, int, int, int, int]
    settings: DecoderSettings
    gen: torch.Generator
    best: _Stack
    best_concept: torch.Tensor
    best_loss: torch.Tensor
    best_epoch: torch.Tensor
    history: list[dict[str, list[float]]]
    members: torch.Tensor
    step: int = 0
    val: tuple[torch.Tensor, _Batch] | None = None

    @classmethod
    def start(cls, net: _Stack, inputs: list[torch.Tensor], offset: torch.Tensor | None,
              targets: Targets, train: np.ndarray, val: np.ndarray,
              settings: DecoderSettings, gen: torch.Generator) -> _Run:
        """Pack the rows (inputs and targets side by side, sample-major: a shuffle is one
        gather of whole rows) and score the starting point on the validation rows."""
        device, m = net.first.device, net.first.shape[0]
        opt = torch.optim.AdamW(net.params, lr=settings.lr,
                                weight_decay=settings.weight_decay, fused=True)
        tv = torch.as_tensor(np.concatenate([train, val]), device=device)
        labels = _Labels.of(targets, net.order, offset, rows=tv)
        dmax = max(x.shape[1] for x in inputs)
        packed = _padded(inputs, tv, extra=labels.packed.shape[2])
        packed[:, :, dmax:] = labels.packed
        run = cls(net, opt, packed[:len(train)], packed[len(train):], dmax, labels.sizes,
                  settings, gen, net.clone(), torch.empty(0), torch.empty(0),
                  torch.zeros(m, dtype=torch.long, device=device),
                  [{"epoch": [], "train_loss": [], "val_loss": []} for _ in range(m)],
                  torch.arange(m, device=device))
        run.best_concept = run.val_losses()                   # M x C
        if not labels.sizes[0]:         # not started from the probe: epoch 0 is no candidate
            run.best_concept.fill_(float("inf"))
        run.best_loss = run.best_concept.sum(dim=1)
        if labels.sizes[0]:
            for i, h in enumerate(run.history):
                h["epoch"].append(0)
                h["train_loss"].append(math.nan)
                h["val_loss"].append(float(run.best_loss[i]))
        return run

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, _Batch]:
        """Inputs (n x M x Dmax) and targets of packed rows."""
        return rows[:, :, :self.dmax], _Labels(rows[:, :, self.dmax:], self.sizes).batch()

    def val_losses(self) -> torch.Tensor:
        """Validation loss per member still training and concept (M' x C, training order)."""
        if self.val is None:
            self.val = self.split(self.p_va)
        x_va, b_va = self.val
        return _concept_losses(self.net.forward(x_va, b_va.offset), b_va, self.net.order)

    def epoch(self, epoch: int) -> None:
        """One epoch of minibatch AdamW on the one-cycle schedule, then the validation
        losses: curves recorded, best states kept."""
        st, n_tr = self.settings, self.p_tr.shape[0]
        batch = n_tr if st.batch_size is None else min(st.batch_size, n_tr)
        steps = math.ceil(n_tr / batch)
        train_sum = torch.zeros(len(self.members), device=self.p_tr.device)
        pe = self.p_tr if batch == n_tr else torch.index_select(
            self.p_tr, 0, torch.randperm(n_tr, generator=self.gen).to(self.p_tr.device))
        for start in range(0, n_tr, batch):
            xb, bb = self.split(pe[start:start + batch])
            z, cache = self.net.forward(xb, bb.offset, dropout=st.dropout, keep=True,
                                        gen=self.gen if st.dropout > 0 else None)
            loss, dz = _concept_losses(z, bb, self.net.order, grad=True)
            for p, g in zip(self.net.params, self.net.backward(cache, dz), strict=True):
                p.grad = g
            self.opt.param_groups[0]["lr"] = _one_cycle(self.step, steps,
                                                        steps * st.max_epochs, st.lr)
            self.opt.step()
            self.step += 1
            train_sum.add_(loss.sum(dim=1), alpha=xb.shape[0])
        val_concept = self.val_losses()
        val_loss = val_concept.sum(dim=1)
        for k, i in enumerate(self.members.tolist()):
            self.history[i]["epoch"].append(epoch)
            self.history[i]["train_loss"].append(float(train_sum[k] / n_tr))
            self.history[i]["val_loss"].append(float(val_loss[k]))
        better = val_loss < self.best_loss[self.members]
        if better.any():
            at = self.members[better]
            self.best_loss[at], self.best_concept[at] = val_loss[better], val_concept[better]
            self.best_epoch[at] = epoch
            self.best.copy_from(self.net, self.members, better)

    def keep_going(self, epoch: int, keep: Sequence[int]) -> bool:
        """Members stop after ``patience`` epochs without a better validation loss, or at
        ``prune_after`` unless they lead some concept (:func:`_leading`) or are in
        ``keep``; False when none is left."""
        st = self.settings
        going = epoch - self.best_epoch[self.members] < st.patience
        if st.prune_after is not None and epoch == st.prune_after:
            going &= _leading(self.best_concept, st.prune_keep, keep)[self.members]
        if bool(going.all()):
            return True
        self.members = self.members[going]
        if not len(self.members):
            return False
        self.net = self.net.select(going)
        self.opt = _adamw_select(self.opt, self.net.params, going)
        self.p_tr, self.p_va = self.p_tr[:, going], self.p_va[:, going]
        self.val = None
        return True


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
