"""SimCLR on MNIST-1D (Chen et al. 2020): two augmented views of each example (MNIST-1D's own
nuisances: a shift, a scale, a shear, smooth and white noise; `kbatch.data.sources.views`), the
MNIST-1D CNN as the encoder with a two-layer projection head, the NT-Xent loss over every view of
the global batch (the other replicas' included), LARS with SimCLR's exclusions (biases and norm
parameters: no weight decay, no trust ratio), and a linear probe on the frozen representation as
the run's accuracy (`final_eval_accuracy`; the contrastive task's own is `partner_accuracy`).

  KERAS_BACKEND=jax kbatch-train --config=configs/simclr_mnist1d.py --config.backend=jax
  kbatch-train --config=configs/simclr_mnist1d.py --config.batch_size=1024 --config.strategy=cpu:4
"""

from kbatch.configs import base


def get_config():
    config = base.get_config()
    config.dataset = "mnist1d/large"  # 60,000 training examples (their labels only for the probe), 10,000 test
    config.task = "contrastive"
    config.temperature = 0.5
    config.projection_dims = (128, 64)
    config.probe_examples = 5000
    config.model = "mnist1d_cnn"  # without its classifier: the representation is its 1,280 flattened features
    config.norm = "batch"  # over every view of the global batch on JAX; `sync_batch` for that on TensorFlow

    # The recipe, given at base_batch_size; SimCLR scales LARS's rate linearly (0.3 x B / 256).
    config.base_batch_size = 256
    config.batch_size = 256
    config.base_learning_rate = 0.3
    config.lr_scaling = "linear"
    config.optimizer = "lars"
    config.momentum = 0.9
    config.weight_decay = 1e-6
    config.warmup_epochs = 1.0
    config.decay = "cosine"
    config.num_epochs = 10
    config.target_accuracy = None
    return config
