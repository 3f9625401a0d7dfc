"""Concept decoders vs. hand-written scikit-learn probes, side by side.

On a seeded synthetic activation store (5,000 labelled images x 6 layers x 256
features, planted linear and non-linear concepts; see ``audit.decode.synthetic``):

- scikit-learn: ``LogisticRegression(max_iter=1000)`` fitted per concept per layer on
  the training split (standardised), the probe a user would write by hand;
- ours: ``activations_to_decoders`` for all concepts and layers at once, which also
  fits the linear probes, the control task, calibration and the held-out metrics.

Both use one CPU thread and the same train/test split. Prints the best held-out
accuracy over layers of both per concept, and last ``speedup=<sklearn_time/ours_time>``.

    python benchmarks/decoders.py            # 5,000 x 6 x 256
    python benchmarks/decoders.py --quick    # 2,000 x 6 x 128, under a minute
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller store, under 60 s")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=None)
    args = parser.parse_args()
    n = args.n or (2000 if args.quick else 5000)
    dim = args.dim or (128 if args.quick else 256)

    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from audit.config import DecoderSettings
    from audit.decode import activations_to_decoders
    from audit.decode.split import encode_labels

    torch.set_num_threads(1)
    from audit.decode.synthetic import planted_activations

    features, labels, cs = planted_activations(n, n_layers=args.layers, dim=dim, seed=0)
    print(f"store: {n} images x {args.layers} layers x {dim} features, "
          f"concepts: {', '.join(cs.names)}")

    # Full-batch training: a higher learning rate and a narrower MLP than the defaults.
    settings = DecoderSettings(hidden=[64], lr=1e-2)
    print(f"decoder settings: hidden={settings.hidden} lr={settings.lr} "
          f"max_epochs={settings.max_epochs} patience={settings.patience}")
    t0 = time.perf_counter()
    bundle = activations_to_decoders(features, labels, cs, settings=settings,
                                     model_sha256="synthetic", pooling="avg")
    ours_time = time.perf_counter() - t0

    # The same split for scikit-learn.
    ids = labels["image_id"].to_numpy()
    where = {name: np.isin(ids, bundle.splits[name]) for name in ("train", "test")}
    codes = encode_labels(labels, cs)
    sk_acc: dict[str, dict[str, float]] = {c: {} for c in cs.names}
    t0 = time.perf_counter()
    for layer, x in features.items():
        tr, te = x[where["train"]], x[where["test"]]
        mean, std = tr.mean(axis=0), tr.std(axis=0) + 1e-12
        tr, te = (tr - mean) / std, (te - mean) / std
        for j, name in enumerate(cs.names):
            y_tr, y_te = codes[where["train"], j], codes[where["test"], j]
            clf = LogisticRegression(max_iter=1000).fit(tr[y_tr >= 0], y_tr[y_tr >= 0])
            sk_acc[name][layer] = float(np.mean(clf.predict(te[y_te >= 0]) == y_te[y_te >= 0]))
    sk_time = time.perf_counter() - t0

    print(f"{'concept':<10} {'sklearn best':>12} {'ours best':>10} {'ours chosen':>12}  layer")
    worse = []
    for name in cs.names:
        ours = {lay: bundle.decoders[lay].metrics[name]["accuracy"] for lay in bundle.layers}
        sk_best, ours_best = max(sk_acc[name].values()), max(ours.values())
        chosen = bundle.validity["concepts"][name]
        print(f"{name:<10} {sk_best:>12.3f} {ours_best:>10.3f} {chosen['accuracy']:>12.3f}  "
              f"{chosen['layer']}")
        if ours_best < sk_best:
            worse.append(name)
    print(f"ours below sklearn on: {', '.join(worse) or 'none'}")
    print(f"sklearn: {sk_time:.2f} s ({len(features) * len(cs.names)} fits); ours: "
          f"{ours_time:.2f} s (all layers, probes, controls, calibration, metrics)")
    print(f"speedup={sk_time / ours_time:.2f}")


if __name__ == "__main__":
    main()
