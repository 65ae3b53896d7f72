"""A byte-level Transformer language model on Python's own standard library (pystdlib_bytes, made
here: nothing to download), small enough to train on a laptop's CPU in about ten minutes.

Pre-LN Transformer blocks with LayerNorm (Radford et al. 2019); AdamW (Loshchilov & Hutter 2019)
with linear warmup then cosine decay, the recipe given at a base batch of 64 sequences and moved
to the run's batch by the square-root rule, as for adaptive optimizers (Malladi et al. 2022). The
batch is counted in sequences: 64 sequences of 128 bytes are 8,192 tokens per update. For the
large-batch recipe of BERT, LAMB (You et al. 2020): --config.optimizer=lamb.

  kbatch-train --config=configs/lm_bytes.py
  KERAS_BACKEND=jax kbatch-train --config=configs/lm_bytes.py --config.backend=jax
"""

from kbatch.configs import base


def get_config():
    config = base.get_config()
    config.dataset = "pystdlib_bytes/seq128"  # 11,263 training sequences of 128 bytes, 680 evaluation ones
    config.task = "next_token"  # cross-entropy in nats per byte, padding masked; perplexity, token accuracy
    config.model = "transformer_lm"
    config.norm = "layer"
    config.model_width = 64
    config.model_layers = 2
    config.model_heads = 4

    # The recipe, given at base_batch_size sequences; batch_size is the global batch of this run.
    config.base_batch_size = 64
    config.base_learning_rate = 3e-3
    config.batch_size = 64
    config.lr_scaling = "sqrt"
    config.warmup_epochs = 0.5
    config.decay = "cosine"
    config.num_epochs = 8
    config.optimizer = "adamw"
    config.beta_1 = 0.9
    config.beta_2 = 0.98
    config.weight_decay = 0.01

    config.steps_per_loop = 44
    config.evals_per_epoch = 1
    config.target_accuracy = None  # the monitor is the eval loss; docs/results/lm_bytes.md states what to reach
    return config
