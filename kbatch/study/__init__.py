"""The batch-size study: sweeps of one config, LR search, the hardware curve and the theory curve.

`kbatch.study.sweep` runs a grid of overrides, each in its own `model_dir` under one sweep folder;
`kbatch.study.report` reads a finished or partial sweep into rows, tables, plots and TensorBoard
HParams; `kbatch.study.nqm` is the noisy quadratic model (Zhang et al. 2019) in closed form;
`kbatch.study.throughput` fits time per update against batch size; `kbatch.study.stragglers`
simulates synchronous, backup-worker and asynchronous data parallelism when workers straggle;
`kbatch.study.studies` runs a sweep or an LR search and writes its report from Python (what the
notebooks call), `kbatch.study.switchable` reads what switchable norm learned, and
`kbatch.study.recipes` holds the committed studies' recipes. The tools in `tools/` are thin absl
scripts over these.
"""
