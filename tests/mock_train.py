"""`kbatch-train` as a user runs it, on TFDS mock data (random examples of each data set's real
features, nothing downloaded):

  python tests/mock_train.py NUM_EXAMPLES [kbatch-train flags...]
"""

import sys

import tensorflow_datasets as tfds

from kbatch import train

if __name__ == "__main__":
    num_examples = int(sys.argv.pop(1))
    with tfds.testing.mock_data(num_examples=num_examples):
        train.main()
