"""The backends a run trains on (TensorFlow `tf.distribute`, TensorFlow parameter servers, Keras on JAX):
the `Backend` contract, each backend's train step, checkpoints and preemption."""
