"""The defaults of every config field (`kbatch.training.schema`): each experiment file starts here.

    from kbatch.configs import base

    def get_config():
        config = base.get_config()
        config.dataset = "cifar10"
        ...
        return config
"""

from kbatch.training import schema


def get_config():
    return schema.defaults()
