"""Interop benchmark: a diffusers DDPM model trained on CPU, sampled by diffusers and by scoresde.

1. Train a small ``UNet2DModel`` on scikit-learn's 8x8 digits (train split, ``[-1, 1]``) with
   diffusers' own DDPM recipe: epsilon loss, ``DDPMScheduler`` (1000 linear betas) for the
   noising, uniform timesteps, AdamW, diffusers' ``EMAModel``; for ``--minutes`` of CPU time.
   Save it as a pipeline folder (``DDPMPipeline.save_pretrained``).
2. Sample ``--n`` images from the same initial noise at NFE 5/10/20 with diffusers'
   ``DPMSolverMultistepScheduler`` (its defaults: DPM-Solver++(2M) midpoint), ``UniPCMultistep``
   and ``DDIMScheduler`` (configs from the model's scheduler), and with scoresde's ``fast``,
   ``dpm_solver`` (order 2) and ``heun`` on ``scoresde.interop.from_diffusers(folder)``, each on
   its own default schedule. Reference rows: the held-out test digits, a moment-matched
   Gaussian and, with ``--reference``, diffusers' 1000-step DDPM ancestral sampler.
3. Judge every set with the demo's figure (``scoresde.demo.classifier_report``): the mean
   top-class probability of a logistic-regression digit classifier fitted on the training digits
   (higher is better) and the total variation of its class histogram from uniform.
4. Test bits/dim by ``scoresde likelihood --ckpt FOLDER --data digits --split test`` (17 grey
   levels, uniform dequantisation, the ``[-1, 1]`` Jacobian), and by ``PretrainedScore.
   bits_per_dim`` at two values of ``eps`` (timestep 0, i.e. ``t = 1/N``, and ``1e-5``).

Run: ``python benchmarks/interop_digits.py [--minutes 4] [--n 512] [--ll-n 128] [--reference]
[--model FOLDER] [--out DIR]``;
writes ``interop_digits.md`` / ``.json`` and the pipeline folder into ``--out``
(default ``benchmarks/out/interop``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

import scoresde as S
from _shared import log, markdown_table, write_text
from scoresde import cli
from scoresde.data import load_dataset
from scoresde.demo import _gaussian_like, classifier_report, demo_threads
from scoresde.interop import from_diffusers
from scoresde.train import to_data_space

NFES = (5, 10, 20)
PEERS = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DDIMScheduler")
OURS = ("fast", "dpm_solver", "heun")
UNET = dict(
    sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
    layers_per_block=1, norm_num_groups=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)  # fmt: skip


def train(minutes: float, batch: int, seed: int) -> tuple[Any, Any, dict[str, float]]:
    """diffusers' DDPM recipe on the digits for ``minutes``: the EMA UNet, its scheduler, stats."""
    import diffusers
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    data = load_dataset("digits", split="train").tensors()  # k / 16 * 2 - 1, in [-1, 1]
    unet = diffusers.UNet2DModel(**UNET)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    ema = EMAModel(unet.parameters(), use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=1e-6)
    gen = torch.Generator().manual_seed(seed)
    start, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - start < 60 * minutes:
        x0 = data[torch.randint(0, len(data), (batch,), generator=gen)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        for group in opt.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 100)  # linear warm-up
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        losses.append(float(loss.detach()))
        step += 1
        if step % 500 == 0:
            log(f"  step {step}: loss {sum(losses[-500:]) / 500:.4f}")
    ema.copy_to(unet.parameters())
    stats = {"steps": step, "seconds": time.perf_counter() - start,
             "final_loss": sum(losses[-200:]) / len(losses[-200:]), "batch": batch,
             "parameters": sum(p.numel() for p in unet.parameters())}  # fmt: skip
    return unet.eval(), sched, stats


@torch.no_grad()
def diffusers_images(unet: Any, folder: Path, name: str, nfe: int, x: torch.Tensor) -> Any:
    """diffusers' own loop with scheduler ``name`` (config from the folder) at ``nfe`` steps."""
    import diffusers

    config = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler").config
    sched = getattr(diffusers, name).from_config(config)
    sched.set_timesteps(nfe)
    x = x * sched.init_noise_sigma
    for k in sched.timesteps:
        x = sched.step(unet(sched.scale_model_input(x, k), k).sample, k, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1), len(sched.timesteps)


def scoresde_images(m: Any, sampler: str, nfe: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """scoresde's ``sampler`` at (at most) ``nfe`` evaluations, its own default schedule."""
    steps = (nfe - 1) // 2 if sampler == "heun" else nfe - 1  # + 1 for the final denoise
    with torch.no_grad():
        res = S.sample(m.score_fn, m.sde, x.shape, sampler=sampler, steps=steps, x_init=x,
                       return_info=True)  # fmt: skip
    return m.to_data(res.samples), res.nfe


def digit_classifier() -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The demo's logistic-regression classifier, the test and training digits in [0, 1]."""
    from sklearn.linear_model import LogisticRegression

    train_set = load_dataset("digits", split="train")
    levels = {"levels": train_set.info.levels}
    train01 = to_data_space(train_set.tensors(), levels)
    test01 = to_data_space(load_dataset("digits", split="test").tensors(), levels)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(train01.reshape(len(train01), -1).double().numpy(), train_set.labels.numpy())
    return clf, test01, train01


def quality_rows(unet: Any, folder: Path, n: int, seed: int, reference: bool) -> list[list]:
    """Classifier figures of every sampler x NFE (and the reference rows)."""
    clf, test01, train01 = digit_classifier()
    m = from_diffusers(folder)
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    rows = []

    def add(lib: str, name: str, nfe: int, images: torch.Tensor, secs: float) -> None:
        rep = classifier_report(clf, images)
        rows.append([lib, name, nfe, rep.confidence, rep.class_tv, secs])
        log(f"  {lib} {name} NFE {nfe}: confidence {rep.confidence:.3f} TV {rep.class_tv:.3f}")

    for nfe in NFES:
        for name in PEERS:
            t0 = time.perf_counter()
            img, used = diffusers_images(unet, folder, name, nfe, x)
            add("diffusers", name.replace("Scheduler", ""), used, img, time.perf_counter() - t0)
        for name in OURS:
            t0 = time.perf_counter()
            img, used = scoresde_images(m, name, nfe, x)
            add("scoresde", name, used, img, time.perf_counter() - t0)
    if reference:
        t0 = time.perf_counter()
        img, used = diffusers_images(unet, folder, "DDPMScheduler", 1000, x)
        add("diffusers", "DDPM ancestral (reference)", used, img, time.perf_counter() - t0)
    g = torch.Generator().manual_seed(seed + 1)
    for label, img in (("test digits", test01), ("Gaussian", _gaussian_like(train01, n, g))):
        rep = classifier_report(clf, img)
        rows.append(["data", label, "-", rep.confidence, rep.class_tv, float("nan")])
    return rows


def bits_per_dim(folder: Path, out: Path, n: int) -> dict[str, Any]:
    """Test bits/dim by ``scoresde likelihood`` and by ``bits_per_dim`` at two ``eps``."""
    js = out / "likelihood.json"
    t0 = time.perf_counter()
    code = cli.main(["likelihood", "--ckpt", str(folder), "--data", "digits", "--split", "test",
                     "--n", str(n), "--out", str(js), "--device", "cpu"])  # fmt: skip
    result = {"cli": json.loads(js.read_text()) if code == 0 else None,
              "cli_seconds": time.perf_counter() - t0}  # fmt: skip
    m = from_diffusers(folder)
    levels = load_dataset("digits", split="test").data[:n]  # integers in [0, 17)
    for name, eps in (("eps=1/N (timestep 0)", m.sde.eps), ("eps=1e-5", 1e-5)):
        t0 = time.perf_counter()
        res = m.bits_per_dim(levels, bins=17, eps=eps, generator=torch.Generator().manual_seed(0))
        bpd = res.bits_per_dim
        result[name] = {"bpd": float(bpd.mean()), "stderr": float(bpd.std() / math.sqrt(len(bpd))),
                        "nfe": float(res.likelihood.nfe.double().mean()),
                        "seconds": time.perf_counter() - t0}  # fmt: skip
        log(f"  bits/dim {name}: {result[name]['bpd']:.4f}")
    return result


def report(stats: dict, rows: list[list], ll: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown section for RESULTS.md."""
    head = ["library", "sampler", "NFE", "classifier confidence", "class TV", "seconds"]
    cli_res = ll["cli"] or {}
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads; {time.strftime('%Y-%m-%d')}.",
        f"Training: diffusers' DDPM recipe, {stats['steps']} steps of batch {stats['batch']} in "
        f"{stats['seconds'] / 60:.1f} min, final loss {stats['final_loss']:.4f}, "
        f"{stats['parameters']} parameters. {args.n} samples per row, one initial noise.",
        "",
        markdown_table(head, rows),
        "",
        f"Test bits/dim (`scoresde likelihood`, {cli_res.get('n')} test digits, 17 levels): "
        f"{cli_res.get('bits_per_dim', float('nan')):.3f} ± "
        f"{cli_res.get('bits_per_dim_stderr') or float('nan'):.3f} "
        f"(eps {cli_res.get('eps')}, NFE {cli_res.get('nfe_mean', float('nan')):.0f}).",
    ]
    for key in ("eps=1/N (timestep 0)", "eps=1e-5"):
        r = ll[key]
        lines.append(f"`bits_per_dim`, {key}: {r['bpd']:.3f} ± {r['stderr']:.3f} "
                     f"(NFE {r['nfe']:.0f}, {r['seconds']:.0f} s)")  # fmt: skip
    return "\n".join(lines) + "\n"


def trained_model(folder: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Train and save (or, with ``--model``, load) the pipeline folder; the UNet and its stats."""
    import diffusers

    if args.model:
        log(f"[1/3] reusing {folder}")
        unet = diffusers.UNet2DModel.from_pretrained(folder / "unet", local_files_only=True)
        return unet.eval(), json.loads((folder / "train_stats.json").read_text())
    log(f"[1/3] training for {args.minutes} min")
    unet, sched, stats = train(args.minutes, args.batch, args.seed)
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    write_text(folder / "train_stats.json", json.dumps(stats, indent=2))
    return unet, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training time (default 4)")
    p.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    p.add_argument("--n", type=int, default=512, help="samples per row (default 512)")
    p.add_argument("--ll-n", type=int, default=128, help="test digits for bits/dim (128)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the idle cores, at most 2; on a busy machine "
        "extra threads make every step many times slower)",
    )
    p.add_argument("--reference", action="store_true", help="add the 1000-step DDPM row")
    p.add_argument("--model", help="reuse the pipeline folder of an earlier run (no training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/interop")
    args = p.parse_args()
    torch.set_num_threads(args.threads or demo_threads())
    out = Path(args.out)
    folder = Path(args.model) if args.model else out / "ddpm-digits"
    unet, stats = trained_model(folder, args)
    log("[2/3] sampling")
    rows = quality_rows(unet, folder, args.n, args.seed + 1, args.reference)
    log("[3/3] bits/dim")
    ll = bits_per_dim(folder, out, args.ll_n)
    text = report(stats, rows, ll, args)
    write_text(out / "interop_digits.md", text)
    write_text(out / "interop_digits.json", json.dumps(
        {"train": stats, "rows": rows, "likelihood": ll}, indent=2, default=str))  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
