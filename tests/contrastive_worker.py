"""One worker of tests/test_contrastive.py's two-worker run: python tests/contrastive_worker.py CONFIG_JSON"""

import json
import sys

import ml_collections
from contrastive_setup import TEMPERATURE, projection, two_view_data

from kbatch.training import Contrastive, train

if __name__ == "__main__":
    config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
    train(
        config,
        model_fn=projection,
        task=Contrastive(temperature=TEMPERATURE, probe=False),
        data=two_view_data(),
        verbose=False,
    )
