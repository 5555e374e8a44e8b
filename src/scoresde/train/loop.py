"""The training loop: DSM steps with EMA, warm-up, clipping, mixed precision, DDP, checkpoints.

One step (Song et al. 2021, eq. 7; EMA as in their Appendix):

1. the global batch of step ``n`` is the ``n``-th batch of a seeded permutation of the data
   (``DistributedSampler``; rank ``r`` of ``W`` holds global positions ``r, r + W, ...``);
2. the training times and noise of the *global* batch are drawn from a generator seeded with
   ``(seed, n)`` and each rank takes its positions, so the run does not depend on the number of
   processes (up to the order of floating-point sums);
3. loss = :meth:`ScoreModel.loss` (denoising score matching with the configured weighting);
   backward (DDP averages gradients), clip the global norm, Adam(W) step with linear warm-up;
4. EMA update; the EMA weights are the ones saved for sampling.

Because the data order and the loss noise are functions of ``(seed, step)``, and the optimizer,
EMA and per-rank RNG states are checkpointed, a resumed run continues bit-identically (CPU,
deterministic algorithms).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from ..checkpoint import (
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ..consistency import ConsistencyModel, ConsistencyTraining, Distillation
from ..data import ArrayDataset
from ..losses import sample_training_times
from ..parameterize import ScoreModel
from .build import (
    as_dataset,
    build_score_model,
    build_sde,
    load_train_data,
    net_from_config,
    to_data_space,
)
from .config import TrainConfig
from .coupling import PairDataset, check_coupling, load_pairs, ot_pair
from .distributed import DistInfo, cleanup_distributed, setup_distributed
from .ema import EMA
from .logs import TrainLogger, last_row
from .optim import GradClip, make_optimizer
from .restore import load_trained, resume_checkpoint

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint stays."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        """The step at which the non-finite loss was detected."""
        self.checkpoint = checkpoint
        """The last good checkpoint (``None`` if none was written)."""


@dataclass
class TrainResult:
    """What a finished :meth:`Trainer.fit` returns."""

    out: Path
    """The run folder."""
    step: int
    """Optimizer steps taken in total (including those before a resume)."""
    loss: float
    """Mean loss over the last logging window."""
    checkpoint: Path | None
    """The newest checkpoint directory: the final one written, or, when there was nothing to
    train (a resumed run already at ``steps``), the one it resumed from."""
    seconds: float
    """Wall time of this call."""
    history: list[tuple[int, float]] = field(default_factory=list)
    """``(step, mean loss)`` at each logging point of this call."""
    samples: Path | None = None
    """The last sample plot written, if any."""
    start_step: int = 0
    """The step this call began at (the checkpoint's step after a resume, else 0)."""
    total_seconds: float = 0.0
    """Wall time of the whole run up to ``step``, summed over its resumed calls (the
    ``seconds`` column of ``metrics.csv``)."""

    @property
    def steps_run(self) -> int:
        """Optimizer steps taken by this call (0: the run was already at ``steps``)."""
        return self.step - self.start_step


@dataclass
class _FitRun:
    """The bookkeeping of one :meth:`Trainer.fit` call."""

    logger: TrainLogger
    start: float
    """Wall time at which the call began."""
    start_step: int
    """The step at which the call began."""
    deadline: float | None
    """Wall time at which ``max_minutes`` is spent (``None``: no limit)."""
    sync_every: int
    """Check the loss for NaN/inf every this many steps (a host read)."""
    checked: int
    """The last step whose loss was checked finite."""
    since: float
    """Wall time of the last closed metrics row."""
    since_n: int = 0
    """Steps since then."""
    history: list[tuple[int, float]] = field(default_factory=list)
    """``(step, mean loss)`` of every metrics row written."""
    last_loss: float = math.nan
    """The mean loss of the last row."""
    checkpoint: Path | None = None
    """The last checkpoint written."""
    samples: Path | None = None
    """The last sample plot written."""


def _seed_mix(seed: int, step: int) -> int:
    """A 63-bit seed for the loss noise of ``step`` (distinct for every (seed, step) pair)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own RNG (dropout, label dropout, augmentation)."""
    return seed * 1_000_003 + 104_729 * (rank + 1)


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or ``None`` for fp32 (mixed precision is CUDA-only here)."""
    if device.type != "cuda":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class Trainer:
    """Train a score model on a data set with the settings of a :class:`TrainConfig`.

    Args:
        config: the run's settings (``config.out`` is the run folder).
        data: the training set (a tensor ``(N, ...)``, an ``(x, labels)`` pair or a
            :class:`TrainData`); ``None`` loads ``config.data`` with :mod:`scoresde.data`.
        resume: continue from the newest checkpoint in ``<out>/checkpoints`` (its config must
            agree with ``config`` on every field that defines the run; ``steps`` may grow).

    Run under ``torchrun`` to train with DistributedDataParallel; rank 0 logs and checkpoints.
    """

    def __init__(self, config: TrainConfig, data: Any = None, *, resume: bool = False) -> None:
        self.cfg = config.resolved()
        if self.cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.dist: DistInfo = setup_distributed(self.cfg.device)
        self.device = self.dist.device
        self.out = Path(self.cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        ckpt = self._find_resume(resume)
        self._init_data(data, ckpt)
        self._init_model()
        self._init_state()
        if ckpt is not None:
            self._restore(ckpt)
            if isinstance(self.consistency, Distillation):
                self.consistency.reset_target()  # the EMA target restarts from the weights

    # -------------------------------------------------------------------------------------------
    # construction helpers
    def _init_data(self, data: Any, ckpt: Any) -> None:
        """The training set, its per-rank batching and ``sigma_data`` (a checkpoint's wins)."""
        cfg = self.cfg
        self.data = self._load_data(data)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} must be divisible by the number of "
                f"processes {self.dist.world_size}"
            )
        self.local_batch = cfg.batch_size // self.dist.world_size
        check_coupling(cfg.coupling, self.local_batch)
        self.batches_per_epoch = (len(self.data) // self.dist.world_size) // self.local_batch
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"batch_size {cfg.batch_size} is larger than the data set "
                f"({len(self.data)} samples); lower --batch-size"
            )
        self.info = self.data.info
        self.sigma_data = float(cfg.sigma_data or self.info.sigma_data)
        if ckpt is not None:
            self.sigma_data = float(ckpt.config["data"]["sigma_data"])

    def _init_model(self) -> None:
        """SDE, network (the same initial weights on every rank), EMA, score model, optimizer."""
        cfg = self.cfg
        self.sde = build_sde(cfg)
        _seed_all(cfg.seed)
        net = net_from_config(
            cfg,
            self.info.shape,
            is_image=self.info.is_image,
            num_classes=self.info.num_classes,
        ).to(self.device)
        if cfg.channels_last and self.info.is_image:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net = net
        self._params = list(net.parameters())
        self.ema = EMA(net, cfg.ema_decay, cfg.ema_warmup)
        self.model = build_score_model(cfg, self._wrap(net), self.sde, self.sigma_data)
        self.optimizer = make_optimizer(
            self._params,
            cfg.optimizer,
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            device=self.device,
        )
        self._clip = GradClip(self._params, cfg.grad_clip) if cfg.grad_clip is not None else None
        self._init_consistency()
        self.amp_dtype = _autocast_dtype(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _init_consistency(self) -> None:
        """The objective of ``objective="consistency"`` (:mod:`scoresde.consistency`).

        CD from ``teacher`` when set, else iCT; ``None`` for denoising score matching.
        """
        cfg = self.cfg
        self.consistency: ConsistencyTraining | Distillation | None = None
        if cfg.objective != "consistency":
            return
        if cfg.class_conditional:
            raise ValueError(
                "objective 'consistency' trains unconditional models; drop class_conditional"
            )
        student = ConsistencyModel(self.model, self.sde, sigma_data=self.sigma_data)
        if not cfg.teacher:
            self.consistency = ConsistencyTraining(student, cfg.steps)
            return
        teacher = load_trained(cfg.teacher, device=self.device)
        if teacher.config.objective != "dsm":
            raise ValueError(
                f"teacher {cfg.teacher!r} is a {teacher.config.objective} model, not a score "
                f"model; distil from a run trained with objective dsm"
            )
        # the EMA target restarts from the student's weights on resume (it is not saved)
        self.consistency = Distillation(teacher.score_fn, teacher.sde, student)

    def _init_state(self) -> None:
        """Step counter, loss window, per-rank random streams and the data order of step 0."""
        cfg = self.cfg
        self.step = 0
        # the running sum of the losses since the last metrics row, and their count: kept in
        # checkpoints so the first row after a resume averages the same steps as without one
        self._window = torch.zeros((), device=self.device, dtype=torch.float64)
        self._window_n = 0
        self._elapsed0 = 0.0  # wall time of the run before this fit call (cumulative)
        self._fit_start: float | None = None
        self.notes: list[str] = []
        self._gen = torch.Generator(device=self.device)
        self._aug_gen = torch.Generator(device=self.device)
        self._aug_gen.manual_seed(_rank_seed(cfg.seed, self.dist.rank) + 1)
        _seed_all(_rank_seed(cfg.seed, self.dist.rank))
        self.data = self.data.to(self.device)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(self.data)),  # type: ignore[arg-type]  # (only its len() is used)
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )

    def _find_resume(self, resume: bool) -> Any:
        if not resume:
            if latest_checkpoint(self.ckpt_dir) is not None:
                raise ValueError(
                    f"{str(self.out)!r} already holds checkpoints; pass --resume "
                    f"to continue that run or choose a new --out folder"
                )
            return None
        last = resume_checkpoint(self.out)
        ckpt = load_checkpoint(last)
        saved = TrainConfig.from_dict(ckpt.config["train"])
        diff = saved.structural_diff(self.cfg)
        if diff:
            detail = ", ".join(
                f"{k}: {getattr(saved, k)!r} -> {getattr(self.cfg, k)!r}" for k in diff
            )
            raise ValueError(
                f"cannot resume {str(last)!r} with a different run definition "
                f"({detail}); use the original settings or a new --out"
            )
        return ckpt

    def _load_data(self, data: Any) -> ArrayDataset:
        pairs = self.cfg.coupling == "pairs"
        if data is None:
            ds = load_pairs(self.cfg.data) if pairs else load_train_data(self.cfg)
        else:
            ds = as_dataset(data)
        if pairs and not isinstance(ds, PairDataset):
            raise ValueError(
                "coupling='pairs' trains on (noise, sample) pairs: --data must be a pairs file "
                "of scoresde reflow (or pass a scoresde.train.coupling.PairDataset)"
            )
        # checked once here: the training step uses the loss without per-batch checks
        if ds.data.is_floating_point() and not bool(torch.isfinite(ds.data).all()):
            raise ValueError(
                f"training data {ds.info.name!r} contain NaN or infinite values; clean them first"
            )
        return ds

    def _wrap(self, net: nn.Module) -> nn.Module:
        wrapped: nn.Module = net
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.cfg.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        return wrapped

    # -------------------------------------------------------------------------------------------
    # checkpoints
    def _meta(self) -> dict[str, Any]:
        from .._version import __version__
        from ..nets import net_spec

        name, net_config = net_spec(self.net)
        info = dataclasses.asdict(self.info)
        return {
            "train": self.cfg.to_dict(),
            "data": {**info, "sigma_data": self.sigma_data, "data_sigma": self.info.sigma_data},
            "net": {"name": name, "config": net_config},
            "scoresde_version": __version__,
        }

    def _gather_rank_state(self) -> tuple[list[dict[str, Any]], list[float]]:
        """Every rank's RNG states and running loss sum (collective when distributed)."""
        rng = _rng_state(self.device)
        rng["aug"] = self._aug_gen.get_state()
        window = float(self._window)  # exact: a float64 tensor to a Python float
        if not self.dist.distributed:
            return [rng], [window]
        cpu_rng = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in rng.items()}
        everyone: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(everyone, (cpu_rng, window))
        return [r for r, _ in everyone], [w for _, w in everyone]

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; all ranks must call)."""
        rng, windows = self._gather_rank_state()
        path = None
        if self.dist.is_main:
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "ema_updates": self.ema.num_updates,
                "rng": rng,
                "log_window": {"sums": windows, "n": self._window_n},
                "seconds": self.elapsed(),
                "world_size": self.dist.world_size,
                "data_order": {
                    "epoch": self.step // self.batches_per_epoch,
                    "batch": self.step % self.batches_per_epoch,
                    "dataset_size": len(self.data),
                    "batch_size": self.cfg.batch_size,
                },
            }
            path = save_checkpoint(
                self.ckpt_dir,
                self.step,
                model=self.net.state_dict(),
                ema=self.ema.state_dict(),
                state=state,
                config=self._meta(),
                keep_last=self.cfg.keep_last,
            )
        if self.dist.distributed:
            dist.barrier()
        return path

    def _restore(self, ckpt: Any) -> None:
        state = ckpt.state
        order = state["data_order"]
        if order["dataset_size"] != len(self.data):
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} was trained on {order['dataset_size']} samples "
                f"but the data now has {len(self.data)}; resume with the same data"
            )
        self.net.load_state_dict(ckpt.model)
        self.ema.load_state_dict(ckpt.ema, state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._restore_log_window(state)
        self._elapsed0 = float(state.get("seconds", self._logged_seconds()))
        rng = state["rng"]
        if state["world_size"] == self.dist.world_size:
            mine = rng[self.dist.rank]
            _set_rng_state(mine, self.device)
            self._aug_gen.set_state(mine["aug"])
        else:  # different process count: a fresh, deterministic per-rank stream
            self.notes.append(
                f"note: the checkpoint was written by {state['world_size']} process(es), this run "
                f"has {self.dist.world_size}; data order and loss noise continue exactly, the "
                f"per-rank random streams (dropout, augmentation) are reseeded"
            )
            _seed_all(_rank_seed(self.cfg.seed, self.dist.rank) + self.step)
            self._aug_gen.manual_seed(_rank_seed(self.cfg.seed, self.dist.rank) + self.step)
        self.resumed_from = ckpt.path

    def _logged_seconds(self) -> float:
        """The run's time at ``self.step`` as ``metrics.csv`` has it, else 0.

        For checkpoints older than their ``seconds`` entry: the last row up to the step.
        """
        row = last_row(self.out / "metrics.csv", self.step)
        return row["seconds"] if row is not None else 0.0

    def elapsed(self) -> float:
        """Wall time of the run so far: its earlier (resumed) calls plus this ``fit`` call."""
        now = time.perf_counter()
        return self._elapsed0 + (now - self._fit_start if self._fit_start is not None else 0.0)

    def _restore_log_window(self, state: dict[str, Any]) -> None:
        """Continue the metrics row that was open at the checkpoint (none in old checkpoints)."""
        window = state.get("log_window")
        if not window or not window["n"]:
            return
        sums = [float(v) for v in window["sums"]]
        same = state["world_size"] == self.dist.world_size
        # another process count: every rank carries the mean, so the rank-average is unchanged
        value = sums[self.dist.rank] if same else sum(sums) / len(sums)
        self._window.fill_(value)
        self._window_n = int(window["n"])

    # -------------------------------------------------------------------------------------------
    # one step
    def _batches(self) -> Iterator[Tensor]:
        """Local index batches from step ``self.step`` on (the data order is stateless)."""
        bpe, lb = self.batches_per_epoch, self.local_batch
        epoch, skip = divmod(self.step, bpe)
        while True:
            self.sampler.set_epoch(epoch)
            order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
            order = order[: bpe * lb].view(bpe, lb).to(self.device)
            for i in range(skip, bpe):
                yield order[i]
            epoch, skip = epoch + 1, 0

    def _times_and_noise(self, step: int) -> tuple[Tensor, Tensor]:
        """Training times and noise of this rank's share of the global batch of ``step``."""
        cfg, info = self.cfg, self.dist
        self._gen.manual_seed(_seed_mix(cfg.seed, step))
        dtype = torch.float32
        t = sample_training_times(
            self.sde,
            cfg.batch_size,
            method=cfg.time_sampling,  # type: ignore[arg-type]
            eps=cfg.eps_train,
            logit_mean=cfg.logit_mean,
            logit_std=cfg.logit_std,
            generator=self._gen,
            device=self.device,
            dtype=dtype,
        )
        z = torch.randn(
            (cfg.batch_size, *self.info.shape),
            generator=self._gen,
            device=self.device,
            dtype=dtype,
        )
        if info.world_size > 1:
            t, z = t[info.rank :: info.world_size], z[info.rank :: info.world_size]
        return t, z

    def _lr(self, step: int) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, (step + 1) / w) if w else self.cfg.lr

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """One optimizer step on the local batch ``data[idx]``; returns (loss, grad norm)."""
        cfg, step = self.cfg, self.step
        x0, y = self.data.get_batch(idx, self._aug_gen)
        if not cfg.class_conditional:
            y = None
        if cfg.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        t, z = self._times_and_noise(step)
        if cfg.coupling == "ot":  # minibatch optimal transport (one host sync per step)
            z = ot_pair(x0, z)
        elif cfg.coupling == "pairs":  # reflow: the noise each sample was drawn from
            z = self.data.noise_batch(idx).to(z.dtype)  # type: ignore[attr-defined]
        lr = self._lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            # the unchecked loss: the data were checked once (finite), t and z are built right
            # here, and the checks of ScoreModel.loss would wait for the device at every step
            if self.consistency is not None:  # the curriculum follows the global step
                if isinstance(self.consistency, ConsistencyTraining):
                    self.consistency.step = step
                loss = self.consistency(x0, self._gen)
            else:
                loss = self.model._loss(x0, t, z, y, cfg.weighting, "mean")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = self._clip() if self._clip is not None else None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.consistency is not None:
            self.consistency.after_step()
        self.ema.update(self.net)
        self.step += 1
        return loss.detach(), norm

    # -------------------------------------------------------------------------------------------
    def _reduce_mean(self, value: Tensor) -> float:
        if self.dist.distributed:
            value = value.clone()
            dist.all_reduce(value)
            value = value / self.dist.world_size
        return float(value)

    def _out_of_time(self, deadline: float | None, on_grid: bool) -> bool:
        """Whether the ``max_minutes`` budget is spent (all ranks agree, at log steps)."""
        if deadline is None:
            return False
        if not self.dist.distributed:
            return time.perf_counter() >= deadline
        if not on_grid:
            return False
        flag = torch.tensor(float(time.perf_counter() >= deadline), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag > 0)

    def _diverged(self, first: int, last: int, logger: TrainLogger) -> TrainingDiverged:
        good = latest_checkpoint(self.ckpt_dir)
        where = f"at step {last}" if first == last else f"between steps {first} and {last}"
        keep = (
            f"the last good checkpoint {str(good)!r} is kept"
            if good is not None
            else "no checkpoint had been written yet"
        )
        msg = (
            f"training stopped: the loss became NaN or infinite {where}; {keep}. "
            f"Lower the learning rate (lr={self.cfg.lr}), keep gradient clipping on, or check "
            f"the data for extreme values."
        )
        logger.message(msg)
        return TrainingDiverged(msg, last, good)

    def fit(self) -> TrainResult:
        """Train until ``config.steps`` (or ``max_minutes``); checkpoint, log and sample on the way.

        Raises:
            TrainingDiverged: the loss became non-finite (nothing is saved after that).
        """
        if self.step >= self.cfg.steps:  # a resumed run already at (or past) its steps
            return self._nothing_to_do()
        run = self._begin_fit()
        batches = self._batches()
        try:
            while self.step < self.cfg.steps:
                loss, norm = self.train_step(next(batches))
                if self._after_step(run, loss, norm):
                    break
        finally:
            run.logger.close()
            self._elapsed0, self._fit_start = self.elapsed(), None
            if self.dist.distributed:
                cleanup_distributed()
        return TrainResult(
            out=self.out,
            step=self.step,
            loss=run.last_loss,
            checkpoint=run.checkpoint,
            seconds=time.perf_counter() - run.start,
            history=run.history,
            samples=run.samples,
            start_step=run.start_step,
            total_seconds=self._elapsed0,
        )

    def _nothing_to_do(self) -> TrainResult:
        """The result of a ``fit`` with no step to take: nothing is written or logged.

        ``checkpoint`` is the newest one (the one resumed from), ``loss`` the last logged loss.
        """
        if self.dist.distributed:
            cleanup_distributed()
        row = last_row(self.out / "metrics.csv", self.step)
        return TrainResult(
            out=self.out,
            step=self.step,
            loss=row["loss"] if row is not None else math.nan,
            checkpoint=latest_checkpoint(self.ckpt_dir),
            seconds=0.0,
            start_step=self.step,
            total_seconds=self._elapsed0,
        )

    def _begin_fit(self) -> _FitRun:
        """Write the run's config, open the logger and set the stop and sync rules of this call."""
        cfg, info = self.cfg, self.dist
        start = self._fit_start = time.perf_counter()
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", cfg.to_yaml())
        logger = TrainLogger(
            self.out,
            start=self.step,
            total=cfg.steps,
            tensorboard=cfg.tensorboard,
            progress=cfg.progress,
            enabled=info.is_main,
            reopen=self._window_n > 0,
        )
        if info.is_main:
            for line in [self.describe(), *self.notes]:
                logger.message(line)
        # a NaN check reads the loss on the host: free on a CPU, a device sync elsewhere, so
        # there it waits for log/checkpoint steps (a checkpoint is never written unchecked)
        sync_every = 1 if (not info.distributed and self.device.type == "cpu") else cfg.log_every
        deadline = None if cfg.max_minutes is None else start + 60.0 * cfg.max_minutes
        return _FitRun(
            logger,
            start,
            start_step=self.step,
            deadline=deadline,
            sync_every=sync_every,
            checked=self.step,
            since=start,
        )

    def _after_step(self, run: _FitRun, loss: Tensor, norm: Tensor | None) -> bool:
        """Account the step's loss; check, log, checkpoint and sample when due; whether to stop."""
        cfg, step = self.cfg, self.step
        self._window += loss
        self._window_n += 1
        run.since_n += 1
        run.logger.advance()
        on_grid = step % cfg.log_every == 0
        last = step == cfg.steps or self._out_of_time(run.deadline, on_grid)
        due_log = on_grid or last
        due_ckpt = step % cfg.ckpt_every == 0 or last
        if due_log or due_ckpt or step % run.sync_every == 0:
            total = self._reduce_mean(self._window)
            if not math.isfinite(total):
                raise self._diverged(run.checked + 1, step, run.logger)
            run.checked = step
            if due_log:
                self._log_row(run, total, norm, close=on_grid)
        if due_ckpt:
            run.checkpoint = self.save() or run.checkpoint
        sample_due = (cfg.sample_every and step % cfg.sample_every == 0) or last
        if self.dist.is_main and cfg.sample_n and sample_due:
            if cfg.progress:  # a grid can take a while: say what is running
                what = "images" if self.info.is_image else "points"
                run.logger.message(
                    f"step {step}: sampling {cfg.sample_n} {what} for the grid ({cfg.sampler}, "
                    f"{cfg.sample_steps} steps)"
                )
            run.samples = self.write_samples(step)
        if last and step < cfg.steps:
            run.logger.message(
                f"stopped at step {step} of {cfg.steps}: max_minutes={cfg.max_minutes} "
                "spent; continue with --resume"
            )
            return True
        return False

    def _log_row(self, run: _FitRun, total: float, norm: Tensor | None, *, close: bool) -> None:
        """Write the metrics row of this step from the window sum ``total``; ``close`` it."""
        now = time.perf_counter()
        mean = total / self._window_n
        row = {
            "step": self.step,
            "loss": mean,
            "lr": self._lr(self.step - 1),
            "grad_norm": float(norm) if norm is not None else math.nan,
            "it_per_s": run.since_n / max(now - run.since, 1e-9),
            "seconds": self.elapsed(),
        }
        run.logger.log(row)
        run.history.append((self.step, mean))
        run.last_loss = mean
        if close:  # a last row off the grid stays open in the checkpoint
            self._window.zero_()
            self._window_n, run.since_n, run.since = 0, 0, now

    # -------------------------------------------------------------------------------------------
    def describe(self) -> str:
        """A one-line summary of the run."""
        n_params = sum(p.numel() for p in self.net.parameters())
        resumed = f", resumed at step {self.step}" if self.step else ""
        objective = f"{self.cfg.weighting} weighting"
        if self.consistency is not None:
            objective = f"consistency {'distillation' if self.cfg.teacher else 'training'}"
        return (
            f"scoresde train: {type(self.net).__name__} ({n_params / 1e6:.2f}M params) on "
            f"{self.info.name} ({len(self.data)} x {tuple(self.info.shape)}), "
            f"{type(self.sde).__name__}, {self.cfg.parameterization} parameterisation, "
            f"{objective}, batch {self.cfg.batch_size} x "
            f"{self.cfg.steps} steps on {self.device}"
            f"{f' x {self.dist.world_size} processes' if self.dist.distributed else ''}"
            f"{resumed}"
        )

    def ema_score_model(self) -> ScoreModel:
        """The EMA network wrapped as the score (what sampling uses)."""
        return build_score_model(self.cfg, self.ema.module, self.sde, self.sigma_data)

    def write_samples(self, step: int) -> Path | None:
        """Sample ``sample_n`` points/images from the EMA weights and write a plot.

        With ``sampler``/``sample_steps`` (default ``fast``, 10 steps: NFE 11); a progress bar
        over the sampler's steps when ``progress`` is on.
        """
        from .. import plots
        from ..sampling import sample

        cfg = self.cfg
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 2024)
        score = self.ema_score_model().score_fn()
        x = sample(
            score,
            self.sde,
            (cfg.sample_n, *self.info.shape),
            sampler=cfg.sampler,
            steps=cfg.sample_steps,
            generator=gen,
            device=self.device,
            dtype=torch.float32,
            progress=cfg.progress,
        )
        info = dataclasses.asdict(self.info)
        x = to_data_space(x, info).cpu()
        path = self.out / "samples" / f"step_{step:08d}.png"
        ref = to_data_space(self.data.tensors()[: cfg.sample_n], info).cpu()
        try:
            if self.info.is_image:
                plots.image_grid(x, path, title=f"samples, step {step}")
            else:
                plots.scatter_compare(ref, x, path, titles=("data", f"samples, step {step}"))
        except Exception as err:  # a plot must never kill a training run
            print(f"warning: could not write {path}: {err}", file=sys.stderr)
            return None
        return path


def train(config: TrainConfig, data: Any = None, *, resume: bool = False) -> TrainResult:
    """Build a :class:`Trainer` and run it (see there for the arguments)."""
    return Trainer(config, data, resume=resume).fit()
