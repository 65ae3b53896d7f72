"""`standard(settings, verbose, task)`: the actions a config turns on, with their parameters, in the order they run."""

from kbatch.training.actions.adascale import AdaScaleProgress
from kbatch.training.actions.batch_control import AdaptBatchSize
from kbatch.training.actions.evaluation import AverageMovingStatistics, Evaluate
from kbatch.training.actions.measurements import CapTheRate, MeasureBNCoupling, MeasureNoiseScale, MeasureSharpness
from kbatch.training.actions.probe import LinearProbe
from kbatch.training.actions.progress import Progress
from kbatch.training.actions.records import LogSteps, RecordStaleness, ReportLossSpikes
from kbatch.training.actions.safety import CheckFinite, Checkpoint, WatchInterrupt, WatchPreemption


def standard(settings, verbose=True, task=None):
    """The actions `settings` (`Settings`) turn on, each with its parameters, in the order they run
    (and the action that adds the `task`'s monitor to each evaluation, `Task.monitor_from`)."""
    s = settings
    return [
        CheckFinite(),
        LogSteps(),
        *([ReportLossSpikes(verbose)] if s.loss_spike_guard else []),
        *([RecordStaleness()] if s.strategy == "parameter_server" else []),
        *([MeasureNoiseScale(s.noise_scale_every, s.noise_scale_decay)] if s.noise_scale_every else []),
        *([AdaScaleProgress(verbose)] if s.lr_gain == "adascale" else []),
        *(
            [AdaptBatchSize(s.max_batch_size, verbose, s.batch_schedule, s.batch_warmup_multiple, s.update_time_model)]
            if s.batch_schedule in ("adaptive", "warmup", "goodput")
            else []
        ),
        AverageMovingStatistics(),
        Evaluate(),
        *([LinearProbe(s.probe_examples)] if getattr(task, "monitor_from", None) == "LinearProbe" else []),
        *([MeasureSharpness(s.sharpness_every, verbose)] if s.sharpness_every else []),
        *([CapTheRate(s.stability_cap, verbose)] if s.stability_cap else []),
        *([MeasureBNCoupling(s.bn_coupling_every)] if s.bn_coupling_every else []),
        *([Progress()] if verbose else []),
        Checkpoint(),
        WatchPreemption(),
        WatchInterrupt(),
    ]
