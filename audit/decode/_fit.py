"""Training in torch: many decoder MLPs at once, and batched logistic-regression probes.

Imported only when decoders are trained (``gan-audit --help`` never imports torch).

Members are independent MLPs stacked along a leading dimension M (one per layer, plus
control-task members) and trained together with batched matrix products: one AdamW
step updates all of them, and since AdamW acts element-wise this is exactly the same
as training each alone. Inputs of different widths are zero-padded to the widest;
the padded weight rows start at zero and receive zero gradient, so they stay zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.config import DecoderSettings
from audit.decode.model import HeadLayout

__all__ = ["Targets", "fit_mlps", "fit_probes"]


@dataclass
class Targets:
    """Per-member labels: codes M x N x C (long, -1 missing), sample weights M x N x C."""

    codes: torch.Tensor
    weights: torch.Tensor

    def rows(self, idx: torch.Tensor) -> Targets:
        return Targets(self.codes[:, idx], self.weights[:, idx])


def _member_losses(logits: torch.Tensor, t: Targets, layout: HeadLayout) -> torch.Tensor:
    """Loss per member (M,): the sum over concepts of each concept's weighted mean loss.

    A concept's mean runs over its labelled rows only, so a missing label changes no
    other concept's loss, and a concept without labels contributes 0.
    """
    m = logits.shape[0]
    known = (t.codes >= 0).to(logits.dtype)
    count = known.sum(dim=1).clamp(min=1.0)                       # M x C
    total = logits.new_zeros(m)
    if layout.binary:
        b = layout.binary
        cols = [layout.starts[j] for j in b]
        z = logits[:, :, cols]
        y = t.codes[:, :, b].clamp(min=0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        total = total + ((loss * t.weights[:, :, b]).sum(dim=1) / count[:, b]).sum(dim=1)
    for j in layout.multiclass:
        z = logits[:, :, layout.slice(j)]
        k = z.shape[-1]
        y = t.codes[:, :, j].clamp(min=0)
        loss = F.cross_entropy(z.reshape(-1, k), y.reshape(-1), reduction="none").view_as(y)
        total = total + (loss * t.weights[:, :, j]).sum(dim=1) / count[:, j]
    return total


def _init_linear(fan_in: Sequence[int], width_in: int, width_out: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's nn.Linear initialisation per member; rows beyond a member's fan-in are 0."""
    w = torch.zeros(len(fan_in), width_in, width_out)
    b = torch.empty(len(fan_in), 1, width_out)
    for i, fi in enumerate(fan_in):
        bound = 1.0 / float(np.sqrt(fi))
        w[i, :fi] = torch.empty(fi, width_out).uniform_(-bound, bound, generator=gen)
        b[i].uniform_(-bound, bound, generator=gen)
    return w, b


def _forward(params: list[torch.Tensor], x: torch.Tensor, dropout: float,
             train: bool) -> torch.Tensor:
    """Logits M x n x width; ``params`` = [W0, b0, ..., W_head, b_head, (W_skip)]."""
    skip = params[-1] if len(params) % 2 else None
    layers = params[:-1] if skip is not None else params
    h = x
    for i in range(0, len(layers) - 2, 2):
        h = torch.relu(torch.baddbmm(layers[i + 1], h, layers[i]))
        if train and dropout > 0:
            h = F.dropout(h, dropout, training=True)
    out = torch.baddbmm(layers[-1], h, layers[-2])
    return out if skip is None else torch.baddbmm(out, x, skip)


def _export(params: list[torch.Tensor], member: int, fan_in: int) -> dict[str, np.ndarray]:
    """One member's weights as numpy, torch nn.Linear convention (out x in)."""
    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().contiguous().cpu().numpy().astype(np.float32)

    out: dict[str, np.ndarray] = {}
    if len(params) % 2:
        out["skip.weight"] = arr(params[-1][member, :fan_in].T)
        params = params[:-1]
    n_trunk = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        w = params[i][member]
        name = f"trunk.{i // 2}" if i // 2 < n_trunk else "head"
        out[f"{name}.weight"] = arr((w[:fan_in] if i == 0 else w).T)
        out[f"{name}.bias"] = arr(params[i + 1][member, 0])
    return out


def fit_mlps(x: torch.Tensor, fan_in: Sequence[int], targets: Targets, train: np.ndarray,
             val: np.ndarray, layout: HeadLayout, settings: DecoderSettings,
             ) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Train M decoder MLPs together; early stopping per member on its validation loss.

    Parameters
    ----------
    x : M x N x Dmax float32
        Standardised features of each member, zero-padded beyond its width ``fan_in``.
    fan_in : list of int
        Input width of each member.
    targets : Targets
        Codes and sample weights of each member (M x N x C).
    train, val : int arrays
        Row indices of the training and validation splits.
    layout, settings
        Head layout; hidden sizes, dropout, lr, weight decay, epochs, patience, batch size.

    Returns
    -------
    weights : list of dict
        Each member's weights at its best validation epoch (numpy, out x in).
    epochs : list of int
        The best epoch (1-based) of each member.
    """
    device = x.device
    m, _, d_max = x.shape
    gen = torch.Generator().manual_seed(settings.seed)
    sizes = [d_max, *settings.hidden, layout.width]
    params: list[torch.Tensor] = []
    for i in range(len(sizes) - 1):
        fi = fan_in if i == 0 else [sizes[i]] * m
        w, b = _init_linear(fi, sizes[i], sizes[i + 1], gen)
        params += [w.to(device).requires_grad_(), b.to(device).requires_grad_()]
    if settings.linear_skip and settings.hidden:
        params.append(torch.zeros(m, d_max, layout.width, device=device, requires_grad=True))
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    tr = torch.as_tensor(train, device=device)
    va = torch.as_tensor(val, device=device)
    x_tr, t_tr = x[:, tr], targets.rows(tr)
    x_va, t_va = x[:, va], targets.rows(va)
    n_tr = len(train)
    batch = n_tr if settings.batch_size is None else min(settings.batch_size, n_tr)

    best_loss = torch.full((m,), float("inf"), device=device)
    best_epoch = torch.zeros(m, dtype=torch.long, device=device)
    best = [p.detach().clone() for p in params]
    for epoch in range(1, settings.max_epochs + 1):
        order = (torch.arange(n_tr, device=device) if batch == n_tr
                 else torch.randperm(n_tr, generator=gen).to(device))
        for start in range(0, n_tr, batch):
            idx = order[start:start + batch]
            xb, tb = (x_tr, t_tr) if batch == n_tr else (x_tr[:, idx], t_tr.rows(idx))
            loss = _member_losses(_forward(params, xb, settings.dropout, True), tb, layout)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            val_loss = _member_losses(_forward(params, x_va, 0.0, False), t_va, layout)
            better = val_loss < best_loss
            if better.any():
                best_loss = torch.where(better, val_loss, best_loss)
                best_epoch = torch.where(better, epoch, best_epoch)
                for b, p in zip(best, params, strict=True):
                    b[better] = p.detach()[better]
        if bool((epoch - best_epoch >= settings.patience).all()):
            break
    weights = [_export(best, i, fan_in[i]) for i in range(m)]
    return weights, best_epoch.tolist()


def fit_probes(x: torch.Tensor, fan_in: Sequence[int], targets: Targets, train: np.ndarray,
               layout: HeadLayout, *, max_iter: int = 200) -> list[dict[str, np.ndarray]]:
    """L2-regularised logistic regression per member and concept (scikit-learn's objective).

    Minimises, for every member and concept, ``C * sum(log-loss) + ||w||^2 / 2`` with
    C = 1 and an unpenalised intercept (``LogisticRegression()``'s defaults; multinomial
    for multiclass concepts), by L-BFGS on all problems at once (they are separable).
    Returns each member's ``head.weight`` / ``head.bias`` (no hidden layer).
    """
    device = x.device
    m, _, d_max = x.shape
    tr = torch.as_tensor(train, device=device)
    x_tr = x[:, tr].double()
    codes = targets.codes[:, tr]
    t = Targets(codes, (codes >= 0).double())
    n_known = (codes >= 0).double().sum(dim=1).clamp(min=1.0)            # M x C
    col_n = torch.cat([n_known[:, [j] * w] for j, w in enumerate(layout.widths)], dim=1)
    w = torch.zeros(m, d_max, layout.width, dtype=torch.float64, device=device,
                    requires_grad=True)
    b = torch.zeros(m, 1, layout.width, dtype=torch.float64, device=device,
                    requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        # Each concept's loss is a mean over its n labelled rows: divide the penalty by n.
        loss = _member_losses(torch.baddbmm(b, x_tr, w), t, layout).sum()
        loss = loss + 0.5 * ((w ** 2).sum(dim=1) / col_n).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return [{"head.weight": w[i, :fan_in[i]].detach().T.float().cpu().numpy(),
             "head.bias": b[i, 0].detach().float().cpu().numpy()} for i in range(m)]
