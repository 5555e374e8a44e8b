"""The ``scoresde`` command line: train, sample and evaluate score-based models (Song et al. 2021).

Subcommands ``train``, ``sample``, ``fit-schedule``, ``likelihood``, ``inpaint``,
``train-classifier``, ``demo`` and more, one module each (:mod:`.train`, :mod:`.sample`, ...),
each defining a ``COMMAND``. The modules import :mod:`.core` (the registry, the shared options,
:func:`main`) and the private helpers (:mod:`._io` for image, mask and ``.npz`` files,
:mod:`._scale`, :mod:`._schedules`), never each other; this package adds their commands in
``--help`` order, and other code adds more with :func:`register_command`. Every failure the user
can fix ends with exit status 1 and one line on stderr (``scoresde <command>: error: ...``);
``SCORESDE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

from .core import CLIError, Command, add_command, build_parser, main, register_command
from .demo import COMMAND as DEMO
from .distill import COMMAND as DISTILL
from .eval import COMMAND as EVAL
from .fit_schedule import COMMAND as FIT_SCHEDULE
from .inpaint import COMMAND as INPAINT
from .likelihood import COMMAND as LIKELIHOOD
from .reflow import COMMAND as REFLOW
from .sample import COMMAND as SAMPLE
from .train import COMMAND as TRAIN
from .train_classifier import COMMAND as TRAIN_CLASSIFIER

__all__ = ["main", "build_parser", "register_command", "Command", "CLIError"]

for _command in (
    TRAIN,
    REFLOW,
    DISTILL,
    SAMPLE,
    FIT_SCHEDULE,
    LIKELIHOOD,
    EVAL,
    INPAINT,
    TRAIN_CLASSIFIER,
    DEMO,
):
    add_command(_command)
