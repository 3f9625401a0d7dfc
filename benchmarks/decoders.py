"""Concept decoders vs. hand-written scikit-learn probes, side by side (issue 4, "Speed").

Stores (seeded):

- synthetic (default): activations shaped like a DCGAN discriminator's
  (``audit.validation.decoders.discriminator_like_activations``): 5,000 labelled images x 6
  layers of 64 .. 512 channels, LeakyReLU outputs whose magnitude differs by orders of
  magnitude across layers, un-standardised; planted linear (tone, digit) and non-linear
  (stroke: XOR, ring: radial) concepts;
- ``--demo``: real activations of ``builtin:digits-dcgan`` on the demo's paired images
  (``digits-paired``, every image in its four tone x stroke variants), extracted into a
  temporary folder; only when the demo weights exist.

Contenders, on the same train / validation / test split (ours):

- baseline (the issue's): scikit-learn ``LogisticRegression(max_iter=1000)`` fitted per
  concept per layer on the stored activations as stored, what a user writes by hand;
- for honesty, the same on activations standardised with training-split statistics;
- ours: ``activations_to_decoders`` with the default ``DecoderSettings`` for all concepts
  and layers at once, which also fits the linear probes, the control task, calibration
  and every held-out metric.

Held-out (test) accuracy per concept: scikit-learn at the layer with its best validation
accuracy (chosen as we choose ours, on validation) and its best test accuracy over layers
(an upper bound), ours at the layer chosen on validation. Imports and first-call set-up
are warmed up before timing; one CPU thread; each side the best of ``--repeats`` runs
(the sides taking turns). The last line gives both times and their ratio:
``sklearn=<baseline s> ours=<our s> speedup=<baseline time / our time>`` (goal: >= 5).

    python benchmarks/decoders.py --quick    # 2,000 images, under a minute
    python benchmarks/decoders.py            # 5,000 images
    python benchmarks/decoders.py --demo     # plus the demo discriminator, if trained
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def _sklearn(features, codes, where, *, standardise):
    """Fit LogisticRegression(max_iter=1000) per layer and concept; time, accuracies."""
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    acc = {part: {} for part in ("val", "test")}
    not_converged = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for layer, x in features.items():
        x = np.asarray(x, dtype=np.float32)
        parts = {p: x[where[p]] for p in ("train", "val", "test")}
        if standardise:
            mean, std = parts["train"].mean(axis=0), parts["train"].std(axis=0)
            std[std < 1e-6] = 1.0
            parts = {p: (v - mean) / std for p, v in parts.items()}
        for j in range(codes.shape[1]):
            y = {p: codes[where[p], j] for p in parts}
            keep = y["train"] >= 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf = LogisticRegression(max_iter=1000).fit(parts["train"][keep],
                                                           y["train"][keep])
            not_converged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            for p in ("val", "test"):
                k = y[p] >= 0
                acc[p][(layer, j)] = float(np.mean(clf.predict(parts[p][k]) == y[p][k]))
    return (time.perf_counter() - t0, time.process_time() - c0), acc, not_converged


def _phases(features, labels, cs, settings):
    """CPU seconds of our training's parts, from one profiled run (not the timed one)."""
    import cProfile
    import pstats

    from audit.decode import activations_to_decoders

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    activations_to_decoders(features, labels, cs, settings=settings, model_sha256="bench",
                            pooling="avg")
    prof.disable()
    cum: dict[str, float] = {}
    for (_, _, name), row in pstats.Stats(prof).stats.items():
        cum[name] = cum.get(name, 0.0) + row[3]
    total = cum["activations_to_decoders"]
    parts = {"linear probes (starts at every layer, full fits where they matter)":
             cum.get("fit_probes", 0.0),
             "MLPs (every layer, and the control task at the chosen ones)":
             cum.get("fit_mlps", 0.0),
             "second moments, principal components, preconditioners":
             sum(cum.get(n, 0.0) for n in ("gram_matrices", "principal_bases",
                                           "probe_preconditioners"))}
    parts["standardising, calibration, layer choice, held-out metrics"] = \
        total - sum(parts.values())
    return total, parts


def compare(title, features, labels, cs, repeats):
    """Time and score both sides on one store (each the best of ``repeats`` runs, the
    sides taking turns: the machine is shared, and the least disturbed run is the closest
    to the cost of the work); returns (baseline seconds, our seconds), wall clock."""
    import numpy as np

    from audit.config import DecoderSettings
    from audit.decode import activations_to_decoders
    from audit.decode.split import encode_labels

    widths = [np.shape(x)[1] for x in features.values()]
    n = len(labels)
    print(f"== {title}: {n} images x {len(features)} layers ({'/'.join(map(str, widths))} "
          f"channels); concepts: {', '.join(cs.names)}")
    settings = DecoderSettings()
    # Warm-up (lazy imports, first-call set-up) on a slice, for both sides.
    small = {k: np.asarray(v)[:200] for k, v in features.items()}
    activations_to_decoders(small, labels.iloc[:200], cs, settings=settings.model_copy(
        update={"max_epochs": 1}), model_sha256="bench", pooling="avg")

    def ours():
        t0, c0 = time.perf_counter(), time.process_time()
        bundle = activations_to_decoders(features, labels, cs, settings=settings,
                                         model_sha256="bench", pooling="avg")
        return (time.perf_counter() - t0, time.process_time() - c0), bundle

    _, bundle = ours()                                   # gives the split both sides use
    ids = labels["image_id"].astype(str).to_numpy()
    where = {p: np.isin(ids, bundle.splits[p]) for p in ("train", "val", "test")}
    codes = encode_labels(labels, cs)
    _sklearn({k: v[:200] for k, v in small.items()}, codes[:200],
             {p: w[:200] for p, w in where.items()}, standardise=False)
    # The sides take turns, so that a busy spell of the machine falls on both.
    times: dict[str, list] = {"ours": [], "sk": [], "st": []}
    for _ in range(repeats):
        t, bundle = ours()
        times["ours"].append(t)
        (t, sk, sk_nc) = _sklearn(features, codes, where, standardise=False)
        times["sk"].append(t)
        (t, st, st_nc) = _sklearn(features, codes, where, standardise=True)
        times["st"].append(t)

    def best_of(side):
        return min(t for t, _ in times[side]), min(c for _, c in times[side])

    (ours_time, ours_cpu), (sk_time, sk_cpu), (st_time, st_cpu) = (
        best_of(side) for side in ("ours", "sk", "st"))

    layers = list(features)
    n_test = int(where["test"].sum())
    print(f"split: {int(where['train'].sum())} train / {int(where['val'].sum())} val / "
          f"{n_test} test; Monte Carlo SE of an accuracy near 0.9: "
          f"{np.sqrt(0.09 / n_test):.3f}")
    print(f"{'concept':<8} {'sklearn':>8} {'(layer)':>9} {'sk best':>8} {'sk std':>8} "
          f"{'ours':>7} {'(layer)':>9} {'decoder':>8} {'probe':>7}")
    below = []
    for j, name in enumerate(cs.names):
        def at_val_best(acc, j=j):
            lay = max(reversed(layers), key=lambda lay: acc["val"][(lay, j)])
            return acc["test"][(lay, j)], lay
        sk_acc, sk_layer = at_val_best(sk)
        sk_best = max(sk["test"][(lay, j)] for lay in layers)
        st_acc, _ = at_val_best(st)
        v = bundle.validity["concepts"][name]
        print(f"{name:<8} {sk_acc:>8.3f} {sk_layer:>9} {sk_best:>8.3f} {st_acc:>8.3f} "
              f"{v['accuracy']:>7.3f} {v['layer']:>9} {v['decoder']:>8} "
              f"{v['probe_accuracy']:>7.3f}")
        if v["accuracy"] < sk_acc:
            below.append(f"{name} ({v['accuracy'] - sk_acc:+.3f})")
    print(f"ours below the baseline (sklearn at its validation-chosen layer) on: "
          f"{', '.join(below) or 'none'}")
    fits = len(layers) * len(cs.names)
    print(f"best of {repeats} runs each side, taking turns")
    print(f"sklearn on stored activations (baseline): {sk_time:.2f} s wall, {sk_cpu:.2f} s CPU "
          f"for {fits} fits ({sk_nc} hit max_iter)")
    print(f"sklearn on standardised activations (extra): {st_time:.2f} s wall, {st_cpu:.2f} s "
          f"CPU for {fits} fits ({st_nc} hit max_iter); speedup against it "
          f"{st_time / ours_time:.2f}")
    print(f"ours: {ours_time:.2f} s wall, {ours_cpu:.2f} s CPU (probes, MLPs, control task, "
          f"calibration, metrics; best epochs {[bundle.decoders[lay].epochs for lay in layers]})")
    total, parts = _phases(features, labels, cs, settings)
    print(f"where our time goes (one profiled run, {total:.2f} s CPU with profiling):")
    for name, sec in parts.items():
        print(f"  {sec:5.2f} s  {100 * sec / total:3.0f}%  {name}")
    print(f"speedup in CPU time (less sensitive to a busy machine): {sk_cpu / ours_cpu:.2f}")
    turns = sorted(sk[0] / ours[0] for sk, ours in zip(times["sk"], times["ours"],
                                                        strict=True))
    print(f"speedup turn by turn (sklearn over ours in the same turn): min {turns[0]:.2f}, "
          f"median {float(np.median(turns)):.2f}, max {turns[-1]:.2f}")
    return sk_time, ours_time


def demo_store(tmp: Path, n: int | None):
    """Activations of the demo discriminator on the paired images (None if not trained)."""
    from audit.demo.models import DISCRIMINATOR_FILE, WEIGHTS_DIR

    if not (WEIGHTS_DIR / DISCRIMINATOR_FILE).is_file():
        return None
    from audit.concepts import load_concept_set
    from audit.decode.run import store_features
    from audit.demo.data import builtin_source
    from audit.extract import extract
    from audit.load import load_discriminator

    images, labels = builtin_source("digits-paired", n=n)
    model = load_discriminator("builtin:digits-dcgan")
    store = extract(model, "auto", images, out=tmp / "paired", progress=False, batch_size=256)
    labels = labels.reset_index(drop=True).assign(image_id=list(store.image_ids))
    return store_features(store), labels, load_concept_set("digits_tone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images, under 60 s")
    parser.add_argument("--n", type=int, default=None, help="images (default 5,000)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per side, taking turns; the best counts (default 5)")
    parser.add_argument("--demo", action="store_true",
                        help="also the demo discriminator's real activations")
    args = parser.parse_args()
    n = args.n or (2000 if args.quick else 5000)

    import torch

    from audit.validation.decoders import discriminator_like_activations

    torch.set_num_threads(1)
    from sklearn.linear_model import LogisticRegression  # noqa: F401 (loads its BLAS)
    from threadpoolctl import threadpool_info

    blas = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    print(f"threads: torch {torch.get_num_threads()} (intra-op), numpy/scipy/scikit-learn "
          f"BLAS and OpenMP {', '.join(blas)}: one each side")
    speedups = []
    if args.demo:
        with tempfile.TemporaryDirectory(prefix="bench-decoders-") as tmp:
            store = demo_store(Path(tmp), args.n)   # default: every paired image (2,156)
            if store is None:
                print("== demo: skipped, audit/demo/weights/discriminator.safetensors is "
                      "missing (python -m audit.demo.train)")
            else:
                speedups.append(compare("demo discriminator (builtin:digits-dcgan)", *store,
                                         args.repeats))
    features, labels, cs = discriminator_like_activations(n, seed=0)
    speedups.insert(0, compare("synthetic discriminator-like store", features, labels, cs,
                               args.repeats))
    if len(speedups) > 1:
        print(f"speedup on the demo store: {speedups[1][0] / speedups[1][1]:.2f}")
    sk_time, ours_time = speedups[0]
    print(f"sklearn={sk_time:.2f}s ours={ours_time:.2f}s speedup={sk_time / ours_time:.2f}")


if __name__ == "__main__":
    main()
