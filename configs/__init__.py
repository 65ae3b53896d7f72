"""Experiment configs, one per file, each with `get_config()` (installed as `kbatch.configs`)."""
