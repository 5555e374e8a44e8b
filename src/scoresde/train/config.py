"""The training configuration: one dataclass, loadable from YAML, overridable from the CLI.

:class:`TrainConfig` holds every setting of a run of denoising score matching (Song et al. 2021,
eq. 7) with :class:`~scoresde.train.Trainer`. :data:`CHOICES` lists the allowed values of its
choice fields and :data:`FIELD_HELP` describes its fields as ``scoresde train`` options (the
command's flags are generated from the fields and this table).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from .._checks import check_choice
from .coupling import COUPLINGS

__all__ = [
    "TrainConfig",
    "SDE_NAMES",
    "WEIGHTINGS",
    "TIME_SAMPLINGS",
    "COUPLINGS",
    "PRECISIONS",
    "OPTIMIZERS",
    "CHOICES",
    "FieldHelp",
    "FIELD_HELP",
]

SDE_NAMES = ("vp", "ve", "subvp", "edm", "rectified_flow")
WEIGHTINGS = ("auto", "sigma2", "likelihood", "none", "natural")
TIME_SAMPLINGS = ("auto", "uniform", "edm", "logit_normal")
PARAMETERIZATIONS = ("auto", "score", "scaled_score", "eps", "x0", "v", "edm", "flow")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw")
MODELS = ("auto", "mlp", "unet", "unet_cifar")
CHOICES: dict[str, tuple[str, ...]] = {
    "sde": SDE_NAMES,
    "model": MODELS,
    "parameterization": PARAMETERIZATIONS,
    "weighting": WEIGHTINGS,
    "time_sampling": TIME_SAMPLINGS,
    "coupling": COUPLINGS,
    "objective": ("dsm", "consistency"),
    "precision": PRECISIONS,
    "optimizer": OPTIMIZERS,
}
"""The allowed values of the fields that name one of a few choices (checked by ``validate``)."""

_FLOAT_FIELDS = (
    "lr",
    "max_minutes",
    "weight_decay",
    "ema_decay",
    "class_dropout",
    "eps_train",
    "sigma_data",
    "grad_clip",
    "logit_mean",
    "logit_std",
)
_INT_FIELDS = (
    "steps",
    "batch_size",
    "warmup_steps",
    "seed",
    "ckpt_every",
    "keep_last",
    "log_every",
    "sample_every",
    "sample_n",
    "sample_steps",
)

# Fields that define what is being trained; a resumed run must agree on all of them.
STRUCTURAL = (
    "data",
    "data_kwargs",
    "sde",
    "sde_kwargs",
    "model",
    "model_kwargs",
    "parameterization",
    "class_conditional",
    "weighting",
    "time_sampling",
    "logit_mean",
    "logit_std",
    "coupling",
    "objective",
    "teacher",
    "sigma_data",
    "batch_size",
    "seed",
    "eps_train",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (``scoresde train`` reads the same fields).

    Load from YAML with :meth:`from_yaml`, override fields with :meth:`replace` or
    :meth:`apply_overrides`; ``to_dict``/``from_dict`` round-trip it through checkpoints.
    """

    data: str = "moons"
    """A built-in data set name (moons, swissroll, ..., digits, fashion-mnist) or a path
    (folder of images, ``.npy``/``.npz`` array)."""
    out: str = "runs/train"
    """Run folder: checkpoints, logs, sample grids."""
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra options for the data loader (e.g. ``n`` for toy sets, ``flip``)."""
    sde: str = "vp"
    """Forward SDE: ``vp``, ``ve``, ``subvp``, ``edm`` or ``rectified_flow`` (the flow path
    ``x_t = (1 - t) x0 + t z``, :class:`scoresde.RectifiedFlow`)."""
    sde_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra SDE parameters (e.g. ``beta_max``, ``sigma_max``)."""
    model: str = "auto"
    """Network: ``mlp``, ``unet`` (small U-Net), ``unet_cifar`` (the 35M DDPM++ U-Net) or
    ``auto`` (MLP for flat data, small U-Net for images)."""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra network options (widths, depth, attention resolutions, dropout, ...)."""
    parameterization: str = "auto"
    """Network output (see :mod:`scoresde.parameterize`): ``score``, ``scaled_score``, ``eps``,
    ``x0``, ``v``, ``edm``, ``flow`` (the velocity) or ``auto`` (``flow`` for
    ``rectified_flow``, else ``edm``, EDM preconditioning)."""
    sigma_data: float | None = None
    """Data standard deviation for the parameterisation (``None``: measured on the data)."""
    class_conditional: bool = False
    """Condition the network on the data set's labels (needs a labelled data set)."""
    class_dropout: float = 0.1
    """Probability of dropping the label in training (classifier-free guidance)."""
    weighting: str = "auto"
    """Loss weighting: ``sigma2`` (std^2), ``likelihood`` (g^2), ``none``, ``natural`` (the
    parameterisation's own MSE; EDM's loss for ``edm``, conditional flow matching for ``flow``)
    or ``auto`` (``natural`` for the EDM SDE with the ``edm`` parameterisation and for ``flow``,
    else ``sigma2``)."""
    time_sampling: str = "auto"
    """Training times: ``uniform`` in ``[eps_train, T]``, ``edm`` (log-normal noise levels),
    ``logit_normal`` (``t = sigmoid(logit_mean + logit_std n)``, Esser et al. 2024) or ``auto``
    (``edm`` for the EDM SDE, else ``uniform``)."""
    logit_mean: float = 0.0
    """Location ``m`` of ``time_sampling: logit_normal``."""
    logit_std: float = 1.0
    """Scale ``s > 0`` of ``time_sampling: logit_normal``."""
    objective: str = "dsm"
    """What is trained: ``dsm`` (a score model by denoising score matching) or ``consistency``
    (a consistency model, :mod:`scoresde.consistency`: distilled from ``teacher`` when set,
    else iCT consistency training with no teacher)."""
    teacher: str = ""
    """The score-model run a ``consistency`` objective distils (empty: no teacher)."""
    coupling: str = "independent"
    """Pairing of data and noise in a batch (:mod:`scoresde.train.coupling`): ``independent``,
    ``ot`` (minibatch optimal transport by an exact assignment; at most 2048 per process) or
    ``pairs`` (fixed reflow pairs: ``data`` is a file of ``scoresde reflow``)."""
    eps_train: float = 1e-5
    """Smallest training time ``t ~ U(eps_train, T)``."""
    steps: int = 10000
    """Number of optimizer steps."""
    max_minutes: float | None = None
    """Wall-clock budget of one ``fit`` call in minutes (``None``: none). When it is spent, the
    step in progress finishes and the run ends as at its last step (metrics row, checkpoint,
    sample grid); ``--resume`` continues it with a fresh budget. Under DDP the ranks agree on
    stopping at ``log_every`` steps."""
    batch_size: int = 128
    """Global batch size (split evenly over DDP ranks)."""
    optimizer: str = "adam"
    """``adam`` or ``adamw``."""
    lr: float = 2e-4
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for ``adamw``)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many steps."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (``None``: no clipping)."""
    ema_decay: float = 0.999
    """EMA decay of the sampling weights."""
    ema_warmup: bool = True
    """Use ``min(ema_decay, (1 + n) / (10 + n))`` at step ``n`` (the EMA starts fast)."""
    precision: str = "auto"
    """Autocast: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (bf16 on CUDA when supported, else
    fp32). Mixed precision is used on CUDA only; on CPU it falls back to fp32."""
    compile: bool = False
    """Wrap the network in ``torch.compile``."""
    channels_last: bool = False
    """Use the channels-last memory format for image networks."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:K``."""
    seed: int = 0
    """Seed of the data order, the loss noise and the initial weights."""
    deterministic: bool = False
    """Call ``torch.use_deterministic_algorithms(True)`` (bit-reproducible, slower on GPU)."""
    ckpt_every: int = 1000
    """Write a checkpoint every this many steps (and at the end)."""
    keep_last: int = 3
    """Keep the newest this many checkpoints."""
    log_every: int = 50
    """Log loss, learning rate and gradient norm every this many steps."""
    sample_every: int = 0
    """Write a sample grid from the EMA weights every this many steps (0: only at the end)."""
    sample_n: int = 64
    """Number of samples in each grid (0: no sample plots)."""
    sample_steps: int = 10
    """Sampler steps for the grids (with the default ``fast`` sampler: NFE 11)."""
    sampler: str = "fast"
    """Sampler for the grids: by default the few-step ``fast`` sampler, so that a grid costs 11
    network evaluations instead of the 250 of Euler-Maruyama (benchmarks/train_grid.py)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Write TensorBoard scalars to ``<out>/tb``."""

    # -------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Check every field; raise ``ValueError`` naming the field and the allowed values.

        Numbers given as strings (YAML reads ``3e-4`` as a string) are converted first.
        """
        self._coerce_numbers()
        for name, choices in CHOICES.items():
            check_choice(name, getattr(self, name), choices)
        if self.sigma_data is not None and not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0 or null, got {self.sigma_data}")
        if isinstance(self.betas, list):
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in (
            "steps",
            "batch_size",
            "ckpt_every",
            "keep_last",
            "log_every",
            "sample_steps",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "sample_every", "sample_n", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_minutes is not None and not 0 < self.max_minutes < float("inf"):
            raise ValueError(f"max_minutes must be a number > 0 or null, got {self.max_minutes}")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1), got {self.class_dropout}")
        if not 0 < self.logit_std < float("inf"):
            raise ValueError(f"logit_std must be a finite number > 0, got {self.logit_std}")
        if not 0.0 <= self.eps_train < 1.0:
            raise ValueError(f"eps_train must lie in [0, 1), got {self.eps_train}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas) or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("data_kwargs", "sde_kwargs", "model_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        return self

    def _coerce_numbers(self) -> None:
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{name} must be an integer, got {value!r}") from None
            if isinstance(value, float) and value.is_integer():
                setattr(self, name, int(value))

    # -------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all configuration fields."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a mapping; unknown keys raise ``ValueError`` with a suggestion."""
        if not isinstance(values, dict):
            raise TypeError(f"a training config must be a mapping, got {type(values).__name__}")
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown training config key {key!r}.{hint}")
        return cls(**values)

    @staticmethod
    def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a YAML mapping of config fields (not validated; see :meth:`from_yaml`)."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(p)!r} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"config file {str(p)!r} must hold a mapping of config fields")
        return values

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """Load a YAML mapping of config fields, then apply ``overrides`` (e.g. from the CLI)."""
        return cls.from_dict({**cls.read_yaml(path), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable copy of the fields."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_yaml(self) -> str:
        """The config as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def apply_overrides(self, items: list[str]) -> TrainConfig:
        """Apply ``KEY=VALUE`` strings (VALUE parsed as YAML; ``a.b=v`` sets a dict entry)."""
        values = self.to_dict()
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"override {item!r} must look like KEY=VALUE")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as err:
                raise ValueError(f"override {item!r}: value is not valid YAML: {err}") from err
            head, _, sub = key.partition(".")
            if sub:
                if not isinstance(values.get(head), dict):
                    raise ValueError(f"override {item!r}: {head!r} is not a mapping field")
                values[head] = {**values[head], sub: value}
            else:
                values[key] = value
        return TrainConfig.from_dict(values)

    def resolved(self) -> TrainConfig:
        """A copy with every ``auto`` choice that depends only on the config made explicit."""
        param = self.parameterization
        if param == "auto":
            # edm for every SDE: eps-prediction + PF ODE throws prior-tail samples far off
            # (benchmarks/RESULTS.md, "Parameterisations"); edm carries -x/std^2 in its skip.
            # A flow path learns its velocity (flow matching).
            param = "flow" if self.sde == "rectified_flow" else "edm"
        weighting = self.weighting
        if weighting == "auto":
            # EDM's own loss for the EDM SDE; elsewhere the standard sigma^2-weighted DSM loss
            # (for the edm parameterisation that is the familiar eps-loss in score space);
            # the velocity's own MSE (conditional flow matching) for flow
            natural = (param == "edm" and self.sde == "edm") or param == "flow"
            weighting = "natural" if natural else "sigma2"
        times = self.time_sampling
        if times == "auto":
            times = "edm" if self.sde == "edm" else "uniform"
        return self.replace(parameterization=param, weighting=weighting, time_sampling=times)

    def structural_diff(self, other: TrainConfig) -> list[str]:
        """Fields (of those that define the run) on which ``self`` and ``other`` differ."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in STRUCTURAL if a[k] != b[k]]


# ------------------------------------------------------------------------------------------------
# the fields as command-line options


class FieldHelp(NamedTuple):
    """How a :class:`TrainConfig` field is shown as a ``scoresde train`` option."""

    group: str
    """The ``--help`` section it is listed in."""
    text: str
    """One line of help (the default is appended from the field)."""
    metavar: str | None = None
    """The placeholder of its value in ``--help`` (``None``: argparse's default)."""


_WHAT, _OPT, _HW, _LOGS = "what to train", "optimisation", "hardware", "checkpoints and logs"

FIELD_HELP: dict[str, FieldHelp] = {
    "data": FieldHelp(_WHAT, "built-in data set (moons, swissroll, 8gaussians, checkerboard, "
                      "pinwheel, spirals, rings, digits, fashion-mnist), a folder of PNG/JPEG "
                      "images or a .npy/.npz array file", "NAME|PATH"),
    "out": FieldHelp(_WHAT, "run folder for checkpoints, metrics.csv, TensorBoard logs and "
                     "samples", "DIR"),
    "sde": FieldHelp(_WHAT, "forward SDE (rectified_flow: the flow path x_t = (1 - t) x0 + "
                     "t z)"),
    "model": FieldHelp(_WHAT, "network: mlp, unet (small), unet_cifar (35M) or auto (MLP for "
                       "points, U-Net for images)"),
    "parameterization": FieldHelp(_WHAT, "what the network predicts (auto: flow, the "
                                  "velocity, for rectified_flow; else edm, i.e. EDM "
                                  "preconditioning)"),
    "sigma_data": FieldHelp(_WHAT, "data standard deviation for the parameterisation (none: "
                            "measured on the data)", "SD|none"),
    "weighting": FieldHelp(_WHAT, "loss weighting (auto: natural for --sde edm with "
                           "--parameterization edm and for flow, else sigma2)"),
    "time_sampling": FieldHelp(_WHAT, "training times: uniform in [eps-train, T], edm "
                               "(log-normal noise levels), logit_normal (sigmoid of "
                               "N(logit-mean, logit-std^2)) or auto (edm for --sde edm)"),
    "logit_mean": FieldHelp(_WHAT, "mean m of --time-sampling logit_normal", "M"),
    "logit_std": FieldHelp(_WHAT, "scale s of --time-sampling logit_normal", "S"),
    "objective": FieldHelp(_WHAT, "dsm (a score model) or consistency (a consistency model: "
                           "distilled from --teacher, else iCT training with no teacher)"),
    "teacher": FieldHelp(_WHAT, "score-model run to distil with --objective consistency "
                         "(empty: none)", "RUN"),
    "coupling": FieldHelp(_WHAT, "data-noise pairing per batch: independent, ot (minibatch "
                          "optimal transport, exact; batch <= 2048 per process) or pairs "
                          "(reflow pairs file from scoresde reflow as --data)"),
    "eps_train": FieldHelp(_WHAT, "smallest training time", "T"),
    "class_conditional": FieldHelp(_WHAT, "condition on the data set's labels (enables "
                                   "sample --class)"),
    "class_dropout": FieldHelp(_WHAT, "probability of dropping the label in training "
                               "(for classifier-free guidance)", "P"),
    "steps": FieldHelp(_OPT, "optimizer steps", "N"),
    "batch_size": FieldHelp(_OPT, "global batch size, split over DDP processes", "B"),
    "optimizer": FieldHelp(_OPT, "optimizer (adamw: decoupled weight decay)"),
    "lr": FieldHelp(_OPT, "peak learning rate", "LR"),
    "weight_decay": FieldHelp(_OPT, "weight decay", "WD"),
    "warmup_steps": FieldHelp(_OPT, "linear learning-rate warm-up steps", "N"),
    "grad_clip": FieldHelp(_OPT, "clip the gradient norm (0 or none turns clipping off)",
                           "NORM"),
    "ema_decay": FieldHelp(_OPT, "EMA decay of the sampling weights", "D"),
    "ema_warmup": FieldHelp(_OPT, "start the EMA fast: decay min(D, (1 + n) / (10 + n)) at "
                            "step n"),
    "seed": FieldHelp(_OPT, "seed of weights, data order and loss noise", "S"),
    "device": FieldHelp(_HW, "auto (CUDA when available), cpu, cuda or cuda:K", "D"),
    "precision": FieldHelp(_HW, "autocast on CUDA (auto = bf16 when supported; CPU uses "
                           "fp32)"),
    "compile": FieldHelp(_HW, "compile the network with torch.compile"),
    "channels_last": FieldHelp(_HW, "channels-last memory format for image networks"),
    "deterministic": FieldHelp(_HW, "deterministic algorithms only (bit-reproducible, slower "
                               "on GPU)"),
    "max_minutes": FieldHelp(_LOGS, "stop after M minutes of training with a final "
                             "checkpoint (none: no limit; --resume continues)", "M|none"),
    "ckpt_every": FieldHelp(_LOGS, "checkpoint every N steps and at the end", "N"),
    "keep_last": FieldHelp(_LOGS, "keep the newest K checkpoints", "K"),
    "log_every": FieldHelp(_LOGS, "log loss/lr/grad norm every N steps", "N"),
    "sample_every": FieldHelp(_LOGS, "write a sample grid every N steps (0: only at the end)",
                              "N"),
    "sample_n": FieldHelp(_LOGS, "samples in each grid (0: no sample grids)", "N"),
    "sample_steps": FieldHelp(_LOGS, "sampler steps for the grids", "N"),
    "sampler": FieldHelp(_LOGS, "sampler for the grids (fast: few-step DPM-Solver++)",
                         "NAME"),
    "progress": FieldHelp(_LOGS, "show a progress bar"),
    "tensorboard": FieldHelp(_LOGS, "write TensorBoard scalars to OUT/tb"),
}  # fmt: skip
"""Help for the ``scoresde train`` option of each field that has one, in ``--help`` order."""
