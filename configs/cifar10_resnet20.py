"""CIFAR-10 ResNet-20 (He et al. 2016, section 4.2) for users with a GPU or TPU and network.

The recipe of the paper at batch 128 (SGD momentum 0.9, lr 0.1, weight decay 1e-4, ~182 epochs)
moved to the run's global batch by the linear scaling rule with 5 epochs of warmup (Goyal et al.
2017), cosine decay instead of the step schedule.

  kbatch-train --config=configs/cifar10_resnet20.py --config.batch_size=1024 --config.strategy=auto
"""

from kbatch.configs import base


def get_config():
    config = base.get_config()
    config.dataset = "cifar10"
    config.model = "resnet20"
    config.norm = "batch"
    config.bn_momentum = 0.9

    config.batch_size = 512
    config.base_batch_size = 128
    config.base_learning_rate = 0.1
    config.lr_scaling = "linear"
    config.warmup_epochs = 5.0
    config.decay = "cosine"
    config.num_epochs = 180
    config.optimizer = "momentum"
    config.momentum = 0.9
    config.weight_decay = 1e-4

    config.steps_per_loop = 100
    config.target_accuracy = 0.91  # He et al. 2016: 91.25% for ResNet-20
    return config
