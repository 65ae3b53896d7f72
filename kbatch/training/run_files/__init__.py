"""The files of a run's folder: its layout and config, the lock that keeps one process on it, the
history, and the TensorBoard events."""
