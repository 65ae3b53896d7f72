"""The distributed training loop: steps, accumulation, evaluation, checkpoints, summaries."""

from kbatch.training.config_check import validate
from kbatch.training.loop import train
