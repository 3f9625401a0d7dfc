"""The hand-written batched L-BFGS of the linear probes against torch.optim.LBFGS.

audit/decode/_lbfgs.py keeps its own solver for speed (the measured reason is in its
docstring); here both solve the same problems and must reach the same optimum.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.decode.split import encode_labels
from audit.validation.decoders import planted_activations


def _torch_lbfgs_probe(x, y, kind, width):
    """LogisticRegression()'s objective (mean log-loss + ||w||^2 / 2n, intercept free) of one
    problem, minimised by torch.optim.LBFGS with autograd (float64)."""
    import torch
    import torch.nn.functional as F

    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y)
    w = torch.zeros(width, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(width, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=1000, tolerance_grad=1e-10,
                            tolerance_change=0, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = xt @ w.T + b
        if kind == "binary":
            loss = F.binary_cross_entropy_with_logits(z[:, 0], yt.double())
        else:
            loss = F.cross_entropy(z, yt)
        loss = loss + 0.5 * (w ** 2).sum() / len(y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(closure().detach()), w.detach().numpy(), b.detach().numpy()


def test_batched_lbfgs_reaches_torch_optims_optimum():
    """Every (member, concept) problem of one batched fit (members of different widths,
    binary and multiclass concepts) ends at torch.optim.LBFGS's optimum of that problem
    alone: the same objective to 1e-6 and the same weights to float32 resolution."""
    import torch

    from audit.decode._fit import Targets
    from audit.decode._lbfgs import fit_probes
    from audit.decode.model import HeadLayout, concept_probabilities

    features, labels, cs = planted_activations(300, n_layers=2, dim=8, seed=7)
    codes = encode_labels(labels, cs)
    layout = HeadLayout.from_concepts(cs)
    xs = [(x - x.mean(0)) / x.std(0) for x in features.values()]
    xs = [xs[0][:, :5].copy(), xs[1]]                        # widths 5 and 8
    train = np.arange(240)
    probes = fit_probes([torch.from_numpy(np.ascontiguousarray(x)) for x in xs],
                        Targets(torch.as_tensor(np.stack([codes] * 2)), torch.ones(2, 300, 4)),
                        train, layout, max_iter=500, tol=1e-6)
    for x, probe in zip(xs, probes, strict=True):
        for j, c in enumerate(cs.concepts):
            sl, y = layout.slice(j), codes[train, j]
            ref, w_ref, b_ref = _torch_lbfgs_probe(x[train], y, c.kind, layout.widths[j])
            w, b = probe["head.weight"][sl].astype(np.float64), probe["head.bias"][sl]
            prob = concept_probabilities(x[train] @ w.T + b, c.kind)
            ours = (-np.mean(np.log(prob[np.arange(len(y)), y]))
                    + 0.5 * np.sum(w ** 2) / len(y))
            assert ours == pytest.approx(ref, abs=1e-6), c.name
            np.testing.assert_allclose(w, w_ref, atol=2e-3)
            # A softmax's unpenalised intercepts are unique up to a common shift.
            shift = 0.0 if c.kind == "binary" else np.mean(b - b_ref)
            np.testing.assert_allclose(b - shift, b_ref, atol=2e-3)
