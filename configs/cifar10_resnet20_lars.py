"""CIFAR-10 ResNet-20 at batch 8,192 with LARS: the MLPerf ResNet-50 recipe's shape on CIFAR.

configs/cifar10_resnet20.py (He et al. 2016, SGD momentum at batch 128, linear scaling) with the
optimizer and schedule of the large-batch ImageNet recipe (You et al. 2017; MLPerf ResNet-50,
see configs/imagenet_resnet50_lars.py): LARS with momentum 0.9, trust coefficient 0.001,
biases and BN parameters out of weight decay and adaptation; a long linear warmup (a sixth of the
run here; a third in MLPerf) then polynomial decay of power 2. The peak learning rate is
MLPerf's 31.2 at batch 32,768 moved to 8,192 by the linear rule (7.8); it is a starting point,
not tuned on CIFAR-10 here (the data needs a download). Weight decay is 1e-4, both ResNet-20's
and MLPerf's.

  kbatch-train --config=configs/cifar10_resnet20_lars.py --config.strategy=auto
"""

from kbatch.configs import cifar10_resnet20


def get_config():
    config = cifar10_resnet20.get_config()
    config.batch_size = 8192
    config.base_batch_size = 8192
    config.base_learning_rate = 31.2 * 8192 / 32768
    config.lr_scaling = "linear"
    config.warmup_epochs = 30.0
    config.decay = "polynomial"  # power 2, as MLPerf
    config.decay_power = 2.0
    config.num_epochs = 180
    config.optimizer = "lars"
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.trust_coefficient = 0.001
    config.epsilon = 0.0
    config.steps_per_loop = 7  # one epoch: ceil(50,000 / 8,192)
    return config
