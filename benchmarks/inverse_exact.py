"""Exact conditional sampling for imputation: bias against cost (issue 16).

1. **Oracle** (``--part oracle``): Gaussian-mixture priors with exact VP scores and closed-form
   conditionals (:func:`scoresde.inverse.gaussian_mixture_conditional`); three problems whose
   posterior modes have unequal weights: 2-D with one coordinate known, 16-D with a block of 8
   known, 16-D with one coordinate missing. For each method, ``N`` independent completions of the
   same observation:

   * mode-mass TV: the total variation between the mean posterior responsibilities of the
     completions and the exact mode weights (unbiased for exact draws, unlike hard assignment);
   * Fréchet excess: the weighted per-mode Fréchet distance minus that of ``N`` exact draws
     (the metric's floor at this sample size), over the modes with >= 5% of the mass;
   * for SMC also the TV of the weighted particles' mode masses (the draws' expectation, with
     less sampling noise) and the mean effective sample size;
   * cost per completion: score evaluations x particles, vector–Jacobian products (VJPs) x
     particles (a twist's backward passes), wall seconds for all ``N``.

   Methods: replacement (PC with and without the Langevin corrector), RePaint-style
   ``resample_steps`` 4 and 16, and ``method="smc"`` with ``K = 4, 16, 64`` and the twists
   ``none`` / ``pgdm`` / ``tmpd``.
2. **Digits** (``--part digits``): the MLP score model of ``benchmarks/inverse.py`` on 8x8
   digits, the lower half of held-out digits missing; replacement against SMC: agreement of an
   independent classifier (the demo's logistic regression on clean digits,
   :func:`scoresde.demo.classifier_report`) with the original class, the spread of the
   completions, and a PNG (masked input / completions / originals).

Usage: ``python benchmarks/inverse_exact.py [--part oracle|digits|all] [--quick] [--out DIR]``.
Prints Markdown tables; writes ``DIR/inverse_exact.md`` and ``DIR/inverse_exact_digits.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from _shared import log, markdown_table, write_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import imputation_problems  # noqa: E402
from scoresde import VPSDE
from scoresde.inverse import gaussian_mixture_conditional, inpaint
from scoresde.metrics import mode_report
from scoresde.targets import GaussianMixture

DT = torch.float64


class Counted:
    """A score function that counts the rows it evaluates and the rows of VJPs through it."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.fn, self.rows, self.vjp_rows = fn, 0, 0

    def _vjp(self, n: int) -> None:
        self.vjp_rows += n

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.fn(x, t)
        self.rows += x.shape[0]
        if out.requires_grad:
            n = x.shape[0]
            out.register_hook(lambda g: self._vjp(n))
        return out


LABELS = {"2d-one": "2-D, x2 missing", "16d-block": "16-D, block of 8 missing",
          "16d-one": "16-D, 1 missing"}  # fmt: skip


def problems() -> dict[str, tuple[GaussianMixture, Tensor, Tensor]]:
    """``label -> (prior, known mask, observed event)``: the oracles of tests/conftest.py."""
    return {LABELS[name]: problem for name, problem in imputation_problems().items()}


def soft_tv(cond: GaussianMixture, x: Tensor) -> float:
    """TV between the mean responsibilities of ``x`` and the mixture weights."""
    mass = cond.responsibilities(x).mean(0)
    return 0.5 * float((mass - cond.weights).abs().sum())


METHODS: list[tuple[str, dict[str, Any]]] = [
    ("replacement, PC + Langevin", {}),
    ("replacement, predictor only", {"corrector": None}),
    ("RePaint U=4", {"corrector": None, "resample_steps": 4}),
    ("RePaint U=16", {"corrector": None, "resample_steps": 16}),
    *[
        (f"SMC K={k}, twist {tw}", {"method": "smc", "particles": k, "twist": tw})
        for tw in ("none", "pgdm")
        for k in (4, 16, 64)
    ],
    ("SMC K=4, twist tmpd", {"method": "smc", "particles": 4, "twist": "tmpd"}),
    ("SMC K=16, twist pgdm, 100 steps", {"method": "smc", "particles": 16, "steps": 100}),
]


def weighted_tv(cond: GaussianMixture, res: Any, known: Tensor) -> float:
    """TV of the mode masses of each observation's weighted particles, averaged (the draws'
    expectation, with less sampling noise)."""
    parts = res.particles[:, :, ~known]
    resp = cond.responsibilities(parts.reshape(-1, parts.shape[-1])).reshape(*parts.shape[:2], -1)
    mass = (res.log_weights.exp()[..., None] * resp).sum(1).mean(0)
    return 0.5 * float((mass - cond.weights).abs().sum())


def oracle_rows(n: int, steps: int) -> list[list[Any]]:
    """One row per problem and method (see the module docstring)."""
    sde, rows = VPSDE(), []
    for pname, (prior, known, obs) in problems().items():
        cond = gaussian_mixture_conditional(prior, known, obs)
        exact = cond.sample(n, torch.Generator().manual_seed(1), dtype=DT)
        floor = mode_report(cond, exact).frechet
        w = [round(v, 3) for v in cond.weights.tolist()]
        rows.append([pname, f"exact draws (weights {w})", soft_tv(cond, exact), "", 0.0])
        for mname, kw in METHODS:
            score = Counted(prior.score_fn(sde))
            t0 = time.perf_counter()
            kw = {"steps": steps, **kw}
            res = inpaint(score, sde, obs[None].expand(n, -1), known, return_info=True,
                          generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
            wall = time.perf_counter() - t0
            x = res.samples
            assert torch.equal(x[:, known], obs[None, known].expand(n, -1))  # known values kept
            rep = mode_report(cond, x[:, ~known])
            big = cond.weights >= 0.05  # modes with enough draws for a covariance
            excess = float((cond.weights * (rep.frechet - floor))[big].sum())
            ess, wtv = "", ""
            if res.particles is not None:  # the weighted particles' masses: less noise
                ess, wtv = f"{float(res.ess.mean()):.1f}", weighted_tv(cond, res, known)
            rows.append([pname, mname, soft_tv(cond, x[:, ~known]), wtv, excess,
                         score.rows // n, score.vjp_rows // n, f"{wall:.1f}", ess])  # fmt: skip
            log(f"{pname} | {mname}: {rows[-1][2:]}")
    return rows


def oracle(args: argparse.Namespace) -> str:
    """Part 1: the bias/cost table."""
    n, steps = (300, 50) if args.quick else (args.n, args.steps)

    rows = oracle_rows(n, steps)
    head = ["problem", "method", "mode-mass TV", "TV, weighted particles", "Fréchet excess",
            "NFE x particles", "VJP x particles", "wall s", "mean ESS"]  # fmt: skip
    for r in rows:
        r += [""] * (len(head) - len(r))
    return (f"Oracle: N = {n} completions per method, {steps} steps, VP SDE, exact scores.\n\n"
            + markdown_table(head, rows))  # fmt: skip


def digits(args: argparse.Namespace, out: Path) -> str:
    """Part 2: digits inpainting, replacement against SMC (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    from inverse import Digits, to_unit, train_score_model, write_png
    from scoresde.demo import classifier_report

    run = Digits(args, out, args.steps, {})
    train_score_model(run, 300 if args.quick else 4000)
    x_tr, y_tr, x_te, y_te = run.data
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(to_unit(x_tr).double().numpy(), y_tr.numpy())
    held_out = float((torch.as_tensor(clf.predict(to_unit(x_te).double().numpy())) == y_te)
                     .double().mean())  # fmt: skip
    n_img, reps = (20, 2) if args.quick else (args.digits, 4)
    idx = torch.arange(n_img) * (len(x_te) // n_img)
    y, labels = x_te[idx], y_te[idx]
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1  # the top half is known
    sde, score_fn = run.trained.sde, run.trained.score_fn
    configs = [
        ("replacement, PC + Langevin, 500 steps", {"steps": 500}),
        ("RePaint U=4, 125 steps", {"steps": 125, "corrector": None, "resample_steps": 4}),
    ]
    configs += [(f"SMC K={k}, twist {tw}, 100 steps",
                 {"steps": 100, "method": "smc", "particles": k, "twist": tw})
                for k in (4, 16) for tw in ("none", "pgdm")]  # fmt: skip
    rows, shown = [], {}
    for name, kw in configs:
        counted = Counted(score_fn)
        t0 = time.perf_counter()
        res = inpaint(counted, sde, y.repeat(reps, 1, 1, 1), mask, return_info=True,
                      generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
        wall = time.perf_counter() - t0
        comp = res.samples.reshape(reps, n_img, 1, 8, 8)
        assert torch.equal(comp[:, :, :, :4], y[None, :, :, :4].expand(reps, -1, -1, -1, -1))
        unit = to_unit(comp.reshape(-1, 1, 8, 8)).reshape(reps, n_img, 8, 8)
        pred = torch.as_tensor(clf.predict(unit.reshape(-1, 64).double().numpy()))
        agree = float((pred == labels.repeat(reps)).double().mean())
        spread = float(unit[:, :, 4:].std(0).mean())
        conf = classifier_report(clf, unit.reshape(-1, 64)).confidence
        ess = f"{float(res.ess.mean()):.1f}" if "particles" in kw else ""
        rows.append([name, agree, conf, spread, counted.rows // (reps * n_img),
                     counted.vjp_rows // (reps * n_img), f"{wall:.1f}", ess])  # fmt: skip
        log(f"digits | {rows[-1]}")
        shown[name] = unit[:2, :12]
    masked = to_unit(y[:12]).reshape(-1, 1, 8, 8).clone()
    masked[:, :, 4:] = float("nan")
    picks = [configs[0][0], configs[-1][0]]
    png = out / "inverse_exact_digits.png"
    write_png(png, [("masked", masked)]
              + [(f"{p.split(',')[0]} {j + 1}", shown[p][j][:, None]) for p in picks
                 for j in range(2)]
              + [("original", to_unit(y[:12]).reshape(-1, 1, 8, 8))])  # fmt: skip
    head = ["method", "classifier agrees with original class", "classifier confidence",
            "spread (std over completions, missing pixels)", "NFE x particles",
            "VJP x particles", "wall s", "mean ESS"]  # fmt: skip
    return (f"Digits: {n_img} held-out digits x {reps} completions, lower half missing; "
            f"independent classifier (logistic regression) {held_out:.3f} on clean held-out "
            f"digits; MLP score model trained {run.summary['score_train_s']} s. PNG: {png}\n\n"
            + markdown_table(head, rows))  # fmt: skip


def main() -> None:
    """Run the parts asked for; print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("oracle", "digits", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--n", type=int, default=1000, help="oracle completions per method")
    parser.add_argument("--steps", type=int, default=300, help="oracle steps")
    parser.add_argument("--digits", type=int, default=50, help="held-out digits inpainted")
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, parts = time.time(), []
    if args.part in ("oracle", "all"):
        parts.append(oracle(args))
    if args.part in ("digits", "all"):
        parts.append(digits(args, out))
    text = "\n\n".join(parts) + f"\n\nTotal {time.time() - t0:.0f} s.\n"
    print(text)
    write_text(out / "inverse_exact.md", text)


if __name__ == "__main__":
    main()
