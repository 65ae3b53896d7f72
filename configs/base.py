"""The defaults of every config field (`kbatch.training.config.schema`): each experiment file starts here.

from kbatch.configs import base

def get_config():
    config = base.get_config()
    config.dataset = "cifar10"
    ...
    return config
"""

from kbatch.training.config import schema


def get_config():
    return schema.defaults()
