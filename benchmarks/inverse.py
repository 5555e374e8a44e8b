"""Digits benchmark for guidance and inpainting (issue 3).

1. Train an unconditional score model on scikit-learn's 8x8 digits with the library's trainer.
2. Train a noise-conditional classifier ``p_t(k | x_t)`` with
   :func:`scoresde.guidance.train_classifier`.
3. Train an *independent* classifier on clean digits (scikit-learn RBF SVM) and report
   its held-out accuracy.
4. Classifier guidance: for every class ``k`` draw guided samples and report the fraction the
   independent classifier assigns to ``k`` (target >= 90%), and the unguided baseline.
5. Inpainting: mask the lower half of held-out digits, complete them with
   :func:`scoresde.inverse.inpaint`, write a PNG (masked input / completions / originals) and
   report the independent classifier's accuracy on the completions and the masked-region RMSE.

Usage: ``python benchmarks/inverse.py [--quick] [--out DIR]``; prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.svm import SVC

import scoresde
from _shared import log
from scoresde.data import load_dataset
from scoresde.guidance import NoiseConditionalClassifier, classifier_guidance, train_classifier
from scoresde.inverse import inpaint
from scoresde.train import TrainConfig, load_trained, train


def progress(msg: str) -> None:
    """Progress on stderr, with the time of day."""
    log(f"[inverse {time.strftime('%H:%M:%S')}] {msg}")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Training space [-1, 1] -> pixel space [0, 1], flattened for the clean classifier."""
    return ((x + 1) / 2).clamp(0, 1).reshape(x.shape[0], -1)


def write_png(path: Path, rows: list[tuple[str, torch.Tensor]]) -> None:
    """A grid: one row per (title, images (N, 1, 8, 8) in [0, 1]); masked pixels may be NaN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.7, len(rows) * 0.8))
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            v = imgs[c, 0].double()
            rgb = (1.0 - v.nan_to_num(0.0))[..., None].expand(8, 8, 3).clone()
            rgb[v.isnan()] = torch.tensor([0.85, 0.15, 0.15], dtype=rgb.dtype)  # missing: red
            ax.imshow(rgb.clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def oracle() -> dict[str, object]:
    """Conditional samplers vs the closed-form posterior of a 3-mode 2-D mixture (exact oracle).

    Problem A: ``y = x1 + 0.5 x2 + N(0, 0.3^2)`` observed at 0.3. Problem B: inpaint ``x2`` given
    ``x1 = 0`` (noise-free for ``inpaint``; noise 0.05 for the linear-Gaussian methods).
    4000 samples, VP SDE, exact scores; mode TV from :func:`scoresde.metrics.mode_report`.
    """
    from scoresde import VPSDE
    from scoresde.inverse import (
        Mask,
        gaussian_mixture_conditional,
        gaussian_mixture_posterior,
        smc_linear,
        solve_linear,
    )
    from scoresde.metrics import mode_report
    from scoresde.targets import GaussianMixture

    cov = [[[0.5, 0.2], [0.2, 0.4]], [[0.4, -0.1], [-0.1, 0.3]], [[0.3, 0.0], [0.0, 0.6]]]
    prior = GaussianMixture([[-1.0, -2.0], [-0.5, 2.0], [1.5, 0.0]], covariances=cov,
                            weights=[0.3, 0.4, 0.3])  # fmt: skip
    sde, n, dt = VPSDE(), 4000, torch.float64
    score = prior.score_fn(sde)
    rows: dict[str, object] = {}

    def g() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    a = torch.tensor([[1.0, 0.5]], dtype=dt)
    y = torch.tensor([[0.3]], dtype=dt)
    post = gaussian_mixture_posterior(prior, a, y, 0.3)
    rows["A_exact_weights"] = [round(w, 3) for w in post.weights.tolist()]
    for m in ("tmpd", "pgdm", "dps"):
        x = solve_linear(
            score, sde, y, a, (n, 2), noise_std=0.3, method=m, steps=200, generator=g()
        )
        rows[f"A_guided_{m}_tv"] = round(mode_report(post, x).tv, 3)
    for m in ("tmpd", "pgdm"):
        r = smc_linear(score, sde, y, a, (n, 2), noise_std=0.3, twist=m, steps=200, generator=g())
        rows[f"A_smc_{m}_tv"] = round(mode_report(post, r.samples).tv, 3)
    mask = torch.tensor([1.0, 0.0], dtype=dt)
    y0 = torch.zeros(1, 2, dtype=dt)
    cond = gaussian_mixture_conditional(prior, mask.bool(), y0[0])
    rows["B_exact_weights"] = [round(w, 3) for w in cond.weights.tolist()]
    x = inpaint(score, sde, y0.expand(n, 2), mask, steps=200, corrector=None, generator=g())
    rows["B_inpaint_replacement_tv"] = round(mode_report(cond, x[:, 1:]).tv, 3)
    post_b = gaussian_mixture_posterior(prior, Mask(mask), y0, 0.05)
    x = solve_linear(score, sde, y0, Mask(mask), (n, 2), noise_std=0.05, steps=200,
                     generator=g(), schedule="logsnr")  # fmt: skip
    rows["B_guided_tmpd_tv"] = round(mode_report(post_b, x).tv, 3)
    r = smc_linear(score, sde, y0, Mask(mask), (n, 2), noise_std=0.05, steps=200, generator=g())
    rows["B_smc_tmpd_tv"] = round(mode_report(post_b, r.samples).tv, 3)
    return rows


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short training (smoke run)")
    parser.add_argument("--out", default="benchmarks/out", help="folder for the PNG")
    parser.add_argument(
        "--scale", type=float, default=2.0, help="classifier guidance scale of the PNG"
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="*",
        default=[1.0, 2.0, 4.0],
        help="guidance scales whose accuracy is reported",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--corrector",
        default="langevin",
        choices=("langevin", "ald", "none"),
        help="corrector of the inpainting PC loop",
    )
    parser.add_argument(
        "--oracle-only",
        action="store_true",
        help="only the exact-oracle comparison of the conditional samplers",
    )
    return parser.parse_args()


@dataclass
class Digits:
    """One run of the digits benchmark: options, data, the trained models and the summary."""

    args: argparse.Namespace
    out: Path
    steps: int
    """Sampler steps of the guided sampling and the inpainting."""
    summary: dict[str, object]
    gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    data: tuple[torch.Tensor, ...] = ()
    """``(x_train, y_train, x_test, y_test)``."""
    trained: Any = None
    indep: Any = None
    """The independent clean-digit classifier (scikit-learn SVC)."""

    def note(self, msg: str) -> None:
        """Log the summary so far, then ``msg``."""
        progress(json.dumps(self.summary))
        progress(msg)


def train_score_model(run: Digits, score_steps: int) -> None:
    """1. The unconditional score model (MLP, VP SDE) on digits, with the library's trainer."""
    run_dir = tempfile.mkdtemp(prefix="scoresde-inverse-")
    cfg = TrainConfig(
        data="digits", model="mlp", model_kwargs=dict(hidden=256, depth=4), sde="vp",
        steps=score_steps, batch_size=128, lr=1e-3, warmup_steps=100, out=run_dir,
        progress=False, tensorboard=False, ckpt_every=score_steps, sample_n=16,
        sample_steps=50, device="cpu",
    )  # fmt: skip
    progress(f"training the score model ({score_steps} steps)")
    t0 = time.time()
    res = train(cfg)
    run.trained = load_trained(res.checkpoint or run_dir)
    run.summary["score_train_s"] = round(time.time() - t0, 1)
    run.summary["score_final_loss"] = round(res.loss, 4)
    train_set, test_set = (
        load_dataset("digits", split="train"),
        load_dataset("digits", split="test"),
    )
    assert train_set.labels is not None and test_set.labels is not None
    run.data = (train_set.tensors(), train_set.labels, test_set.tensors(), test_set.labels)


def train_noisy_classifier(run: Digits, clf_steps: int) -> NoiseConditionalClassifier:
    """2. The noise-conditional classifier ``p_t(k | x_t)``, trained with the library."""
    x_tr, y_tr, x_te, y_te = run.data
    sde = run.trained.sde
    torch.manual_seed(0)
    sigma_data = run.trained.data_info["sigma_data"]
    clf = NoiseConditionalClassifier(sde, (1, 8, 8), 10, sigma_data=sigma_data)
    run.note(f"training the noise-conditional classifier ({clf_steps} steps)")
    t0 = time.time()
    losses = train_classifier(clf, sde, x_tr, y_tr, steps=clf_steps, generator=run.gen)
    run.summary["noisy_classifier_train_s"] = round(time.time() - t0, 1)
    run.summary["noisy_classifier_final_loss"] = round(float(np.mean(losses[-100:])), 4)
    with torch.no_grad():
        t_small = torch.full((len(x_te),), 1e-3)
        acc0 = (clf(x_te, t_small).argmax(1) == y_te).double().mean()
    run.summary["noisy_classifier_clean_test_acc"] = round(float(acc0), 4)
    return clf


def fit_independent_classifier(run: Digits) -> None:
    """3. An independent RBF SVM on clean digits, and its held-out accuracy."""
    x_tr, y_tr, x_te, y_te = run.data
    run.indep = SVC(C=10.0, gamma="scale")
    run.indep.fit(to_unit(x_tr).numpy(), y_tr.numpy())
    acc = run.indep.score(to_unit(x_te).numpy(), y_te.numpy())
    run.summary["independent_classifier_test_acc"] = round(float(acc), 4)


def predict(run: Digits, x: torch.Tensor) -> torch.Tensor:
    """The independent classifier's labels of images in training space."""
    return torch.from_numpy(run.indep.predict(to_unit(x).numpy()))


def guided_sampling(run: Digits, clf: NoiseConditionalClassifier, per_class: int) -> None:
    """4. Classifier-guided samples per class at every scale, against the unguided baseline."""
    sde, score_fn, args = run.trained.sde, run.trained.score_fn, run.args
    labels = torch.arange(10).repeat_interleave(per_class)
    shape = (len(labels), 1, 8, 8)
    run.note(f"guided sampling ({len(labels)} samples, {run.steps} steps)")
    t0 = time.time()
    with torch.no_grad():
        base = scoresde.sample(score_fn, sde, shape, steps=run.steps, generator=run.gen)
    run.summary["unguided_match_rate"] = round(
        float((predict(run, base) == labels).double().mean()), 4
    )
    by_scale = {}
    for scale in sorted({args.scale, *args.scales}):
        with torch.no_grad():
            guided_score = classifier_guidance(score_fn, clf, labels, scale=scale)
            x_s = scoresde.sample(guided_score, sde, shape, steps=run.steps, generator=run.gen)
        pred = predict(run, x_s)
        per = [(pred[labels == k] == k).double().mean().item() for k in range(10)]
        by_scale[scale] = {
            "accuracy": round(float((pred == labels).double().mean()), 4),
            "per_class": [round(p, 3) for p in per],
        }
        if scale == args.scale:
            xs = x_s
        progress(f"scale {scale}: {by_scale[scale]}")
    run.summary["guided"] = by_scale
    run.summary["guided_sampling_s"] = round(time.time() - t0, 1)
    write_png(run.out / "inverse_digits_guided.png",
              [(f"class {k}", to_unit(xs[labels == k][:10]).reshape(-1, 1, 8, 8))
               for k in range(10)])  # fmt: skip


def inpainting(run: Digits) -> None:
    """5. Inpainting of the lower half of held-out digits: accuracy, masked RMSE and a PNG."""
    _, _, x_te, y_te = run.data
    n_show = 12
    y = x_te[: 10 * n_show : 10]
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1  # the top half is known
    completions = []
    run.note("inpainting")
    t0 = time.time()
    corr = None if run.args.corrector == "none" else run.args.corrector
    for _ in range(2):
        completions.append(inpaint(run.trained.score_fn, run.trained.sde, y, mask,
                                   steps=run.steps, corrector=corr, generator=run.gen))  # fmt: skip
    run.summary["inpainting_s"] = round(time.time() - t0, 1)
    assert torch.equal(completions[0][..., :4, :], y[..., :4, :])
    comp_all = torch.cat(completions)
    true_lab = y_te[: 10 * n_show : 10].repeat(2)
    acc = (predict(run, comp_all) == true_lab).double().mean()
    run.summary["inpainting_classifier_acc"] = round(float(acc), 4)
    err = ((to_unit(comp_all) - to_unit(y.repeat(2, 1, 1, 1))) ** 2).reshape(-1, 8, 8)[:, 4:]
    run.summary["inpainting_masked_rmse"] = round(float(err.mean().sqrt()), 4)
    masked = to_unit(y).reshape(-1, 1, 8, 8).clone()
    masked[:, :, 4:] = float("nan")
    png = run.out / "inverse_digits_inpainting.png"
    write_png(png, [("masked", masked)]
              + [(f"completion {i + 1}", to_unit(c).reshape(-1, 1, 8, 8))
                 for i, c in enumerate(completions)]
              + [("original", to_unit(y).reshape(-1, 1, 8, 8))])  # fmt: skip
    run.summary["png"] = [str(png), str(run.out / "inverse_digits_guided.png")]


def main() -> None:
    """Run the oracle comparison, or the digits benchmark; print a JSON summary."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.oracle_only:
        print(json.dumps(oracle(), indent=1))
        return
    score_steps, clf_steps, per_class, steps = (
        (300, 300, 10, 100) if args.quick else (4000, 3000, 50, 500)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    summary: dict[str, object] = {
        "quick": args.quick,
        "guidance_scale": args.scale,
        "corrector": args.corrector,
    }
    run = Digits(args, out, steps, summary)
    train_score_model(run, score_steps)
    clf = train_noisy_classifier(run, clf_steps)
    fit_independent_classifier(run)
    guided_sampling(run, clf, per_class)
    inpainting(run)
    summary["total_s"] = round(time.time() - t_start, 1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
