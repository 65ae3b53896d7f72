"""The actions a run takes after each compiled loop of updates, one small class per job (see
`kbatch.training.actions.action.Action` for the hooks); `standard(settings)` builds the ones a config
turns on, in order."""

from kbatch.training.actions.action import Action
from kbatch.training.actions.adascale import AdaScaleProgress
from kbatch.training.actions.batch_control import AdaptBatchSize
from kbatch.training.actions.callbacks import KerasCallbacks
from kbatch.training.actions.evaluation import AverageMovingStatistics, Evaluate
from kbatch.training.actions.measurements import CapTheRate, MeasureBNCoupling, MeasureNoiseScale, MeasureSharpness
from kbatch.training.actions.probe import LinearProbe
from kbatch.training.actions.progress import Progress
from kbatch.training.actions.records import LogSteps, RecordStaleness, ReportLossSpikes
from kbatch.training.actions.safety import CheckFinite, Checkpoint, WatchInterrupt, WatchPreemption, diverged
from kbatch.training.actions.standard import standard

__all__ = [
    "Action",
    "AdaScaleProgress",
    "AdaptBatchSize",
    "AverageMovingStatistics",
    "CapTheRate",
    "CheckFinite",
    "Checkpoint",
    "Evaluate",
    "KerasCallbacks",
    "LinearProbe",
    "LogSteps",
    "MeasureBNCoupling",
    "MeasureNoiseScale",
    "MeasureSharpness",
    "Progress",
    "RecordStaleness",
    "ReportLossSpikes",
    "WatchInterrupt",
    "WatchPreemption",
    "diverged",
    "standard",
]
