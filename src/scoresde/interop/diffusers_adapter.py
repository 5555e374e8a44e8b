"""diffusers models and schedulers as scoresde score functions: :func:`from_diffusers`.

diffusers is an optional dependency (``pip install scoresde[diffusers]``), imported here only
when a folder is loaded; a model and a scheduler already built need no import. What maps where:

* discrete-time schedulers (:data:`DISCRETE_SCHEDULERS`: DDPM, DDIM, DPM-Solver, Euler, PNDM,
  UniPC, ...) give a :class:`~scoresde.interop.DiscreteVPSDE` built from the scheduler's own
  ``alphas_cumprod`` (any ``beta_schedule`` of :data:`BETA_SCHEDULES` or ``trained_betas``, any
  ``num_train_timesteps``); the UNet is called at the fractional timestep ``N t - 1`` and its
  ``prediction_type`` (``epsilon``, ``v_prediction``, ``sample``) becomes the score by
  :func:`scoresde.parameterize.coefficients` (``eps``, ``v`` with unit data std, ``x0``);
* ``ScoreSdeVeScheduler`` (score_sde's NCSN++ VE models, ``UNet2DModel(time_embedding_type=
  "fourier")``) gives a :class:`~scoresde.VESDE` with the scheduler's ``sigma_min``,
  ``sigma_max`` and ``sampling_eps``; the UNet is called at ``sigma(t)`` and its output is the
  score, as diffusers' ``ScoreSdeVePipeline`` uses it. These models work on ``[0, 1]`` images,
  DDPM-type ones on ``[-1, 1]``.

Nothing here touches the network: folders load with ``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from ..sde import VESDE
from .discrete import DiscreteVPSDE
from .pretrained import PretrainedScore

__all__ = [
    "from_diffusers",
    "load_diffusers_folder",
    "import_diffusers",
    "DISCRETE_SCHEDULERS",
    "VE_SCHEDULERS",
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "INSTALL_HINT",
]

DISCRETE_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "PNDMScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
)
"""diffusers schedulers of a discrete DDPM noise schedule (``alphas_cumprod``)."""
VE_SCHEDULERS = ("ScoreSdeVeScheduler",)
"""diffusers schedulers of score_sde's variance-exploding SDE."""
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
"""The ``beta_schedule`` values supported (or ``trained_betas``)."""
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""diffusers' ``prediction_type`` -> the scoresde parameterisation."""
INSTALL_HINT = "pip install scoresde[diffusers]"
"""How to install the optional dependency."""
MODELS = ("UNet2DModel",)
"""The diffusers model classes a folder may hold."""


def import_diffusers() -> Any:
    """``import diffusers``, or an ``ImportError`` naming the extra to install."""
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(
            f"loading diffusers models needs the diffusers package, which is not installed: "
            f"{INSTALL_HINT}"
        ) from err
    return diffusers


def _scheduler_kind(name: str | None) -> str:
    """``"discrete"`` or ``"ve"`` for a supported scheduler class name, else ``ValueError``."""
    if name in DISCRETE_SCHEDULERS:
        return "discrete"
    if name in VE_SCHEDULERS:
        return "ve"
    raise ValueError(
        f"scheduler {name!r} is not supported; supported: {', '.join(DISCRETE_SCHEDULERS)} "
        f"(discrete DDPM schedules) and {', '.join(VE_SCHEDULERS)} (score_sde VE)"
    )


def _check_discrete_config(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` for a beta schedule, prediction or timestep type not supported."""
    pred = config.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type {pred!r} is not supported; supported: {', '.join(PREDICTION_TYPES)}"
        )
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and schedule not in BETA_SCHEDULES:
        raise ValueError(
            f"beta_schedule {schedule!r} is not supported; supported: "
            f"{', '.join(BETA_SCHEDULES)}, or trained_betas"
        )
    if config.get("timestep_type", "discrete") != "discrete":
        raise ValueError(
            f"timestep_type {config['timestep_type']!r} is not supported; supported: 'discrete'"
        )


def _scheduler_name(scheduler: Any) -> str:
    """The supported class name among ``scheduler``'s classes (subclasses accepted)."""
    names = [cls.__name__ for cls in type(scheduler).__mro__]
    known = [n for n in names if n in DISCRETE_SCHEDULERS + VE_SCHEDULERS]
    if not known:
        _scheduler_kind(names[0])  # raises the message naming what is supported
    return known[0]


def _event_shape(model: Any, event_shape: Any) -> tuple[int, ...] | None:
    if event_shape is not None:
        return tuple(int(s) for s in event_shape)
    config = getattr(model, "config", None)
    size = getattr(config, "sample_size", None)
    channels = getattr(config, "in_channels", None)
    if size is None or channels is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return (int(channels), *(int(s) for s in hw))


def unet_call(net: Any, x: Tensor, c: Tensor, labels: Tensor | None) -> Tensor:
    """``net(x, c, class_labels=labels)`` unwrapped from diffusers' output object or tuple.

    A network with a learned variance (``variance_type="learned_range"``, Nichol & Dhariwal
    2021) returns twice the channels; the first half is the prediction (as diffusers splits it)
    and the variance is not needed for the score.
    """
    out = net(x, c) if labels is None else net(x, c, class_labels=labels)
    out = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
    if isinstance(out, Tensor) and out.dim() > 1 and out.shape[1] == 2 * x.shape[1]:
        return out[:, : x.shape[1]]
    return out


def from_diffusers(
    model: Any,
    scheduler: Any = None,
    *,
    null_label: int | None = None,
    event_shape: tuple[int, ...] | None = None,
    data_range: tuple[float, float] | None = None,
) -> PretrainedScore:
    """A diffusers model and its scheduler (or a local folder) as a :class:`PretrainedScore`.

    Args:
        model: a ``UNet2DModel`` (or any module called as ``model(x, timestep,
            class_labels=...)``), or the path of a local diffusers folder: a pipeline folder
            (``model_index.json``, ``unet/``, ``scheduler/``) or a model folder (``config.json``
            with ``scheduler_config.json``). Nothing is downloaded.
        scheduler: the model's scheduler (not with a folder). Its class (one of
            :data:`DISCRETE_SCHEDULERS` or :data:`VE_SCHEDULERS`) picks the SDE; only its
            training configuration matters, not its inference settings.
        null_label: the class of the unconditional score of a label-dropout model (for
            classifier-free guidance, :meth:`PretrainedScore.conditional`).
        event_shape: the shape of one sample (default: from the UNet's config).
        data_range: the interval ``[0, 1]`` images map to (default ``(-1, 1)``; ``(0, 1)`` for
            VE models).

    Returns:
        The score on a :class:`~scoresde.interop.DiscreteVPSDE` (marginal ``alphas_cumprod[k]``
        at ``.times(k)``) or a :class:`~scoresde.VESDE`. Deterministic ``DDIMScheduler`` and
        ``DPMSolverMultistepScheduler`` loops are reproduced step for step by scoresde's
        ``ddim`` and ``dpm_solver`` (with ``solver_type=``) on ``schedule=m.times(
        scheduler.timesteps)`` with ``denoise=True``; diffusers' ``clip_sample`` and
        ``thresholding`` are not applied.
    """
    if isinstance(model, (str, os.PathLike)):
        if scheduler is not None:
            raise TypeError("from_diffusers(folder) takes no scheduler: the folder holds one")
        model, scheduler = load_diffusers_folder(model)
    elif scheduler is None:
        raise TypeError(
            "from_diffusers(model, scheduler) needs the model's scheduler "
            "(or pass a local diffusers folder alone)"
        )
    if not callable(model):
        raise TypeError(f"model must be a callable module, got {type(model).__name__}")
    if type(model).__name__ == "UNet2DConditionModel":
        raise ValueError(
            "UNet2DConditionModel (text-conditional) is not supported; use UNet2DModel"
        )
    name = _scheduler_name(scheduler)
    config = dict(scheduler.config)
    shape = _event_shape(model, event_shape)
    num_classes = getattr(getattr(model, "config", None), "num_class_embeds", None)
    if _scheduler_kind(name) == "ve":
        ve = VESDE(float(config["sigma_min"]), float(config["sigma_max"]))
        ve.eps = float(config.get("sampling_eps", ve.eps))
        return PretrainedScore(
            ve, model, unet_call, "score", time_input="sigma", event_shape=shape,
            data_range=data_range or (0.0, 1.0), num_classes=num_classes, null_label=null_label,
        )  # fmt: skip
    _check_discrete_config(config)
    sde = DiscreteVPSDE(scheduler.alphas_cumprod)
    prediction = PREDICTION_TYPES[config.get("prediction_type", "epsilon")]
    return PretrainedScore(
        sde, model, unet_call, prediction, time_input="timestep",  # type: ignore[arg-type]
        event_shape=shape, data_range=data_range or (-1.0, 1.0), num_classes=num_classes,
        null_label=null_label, likelihood_eps=sde.eps,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# local folders


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def folder_layout(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The model folder and the scheduler config file of a diffusers folder, else ``ValueError``.

    A pipeline folder has ``model_index.json`` with ``unet/`` and ``scheduler/``; a model folder
    has ``config.json`` beside ``scheduler_config.json``.
    """
    p = Path(path)
    if (p / "model_index.json").is_file():
        unet, sched = p / "unet", p / "scheduler" / "scheduler_config.json"
    else:
        unet, sched = p, p / "scheduler_config.json"
    if not ((unet / "config.json").is_file() and sched.is_file()):
        raise ValueError(
            f"{str(p)!r} is not a diffusers folder: expected a pipeline folder "
            "(model_index.json, unet/config.json, scheduler/scheduler_config.json) or a model "
            "folder (config.json and scheduler_config.json) of a UNet2DModel"
        )
    return unet, sched


def load_diffusers_folder(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The ``UNet2DModel`` and scheduler of a local diffusers folder (``local_files_only``).

    The folder, the scheduler class and its configuration are checked before diffusers is
    imported, so a bad folder gets its own message even without diffusers.
    """
    unet_dir, sched_file = folder_layout(path)
    sched_config = _read_json(sched_file)
    name = sched_config.get("_class_name")
    if _scheduler_kind(name) == "discrete":
        _check_discrete_config(sched_config)
    model_name = _read_json(unet_dir / "config.json").get("_class_name")
    if model_name not in MODELS:
        raise ValueError(
            f"{unet_dir / 'config.json'} describes a {model_name!r}; supported: {', '.join(MODELS)}"
        )
    diffusers = import_diffusers()
    model = diffusers.UNet2DModel.from_pretrained(
        unet_dir, local_files_only=True, low_cpu_mem_usage=False
    )
    scheduler = getattr(diffusers, str(name)).from_config(sched_config)
    return model.eval(), scheduler
