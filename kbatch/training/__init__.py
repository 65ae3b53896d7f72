"""The runner: a run built from a config (`build_run`), its actions, tasks and the config schema.

result = kbatch.training.train(config, task=..., actions=[...], callbacks=[...])
"""

from kbatch.training.actions.action import Action
from kbatch.training.config.schema import Settings, resolve, validate
from kbatch.training.contrastive import Contrastive
from kbatch.training.runner import LoopOutput, Run, build_run, resolve_settings, train
from kbatch.training.tasks import Classification, NextToken, Task

__all__ = [
    "Action",
    "Classification",
    "Contrastive",
    "LoopOutput",
    "NextToken",
    "Run",
    "Settings",
    "Task",
    "build_run",
    "resolve",
    "resolve_settings",
    "train",
    "validate",
]
