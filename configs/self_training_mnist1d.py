"""Self-training on MNIST-1D (pseudo-labels, Lee 2013; a teacher's labels for a student, Xie et
al. 2020): 1,000 of mnist1d/large's 60,000 training examples keep their labels; a teacher trained
on them alone labels the other 59,000, and the student trains on the 1,000 and on the examples
the teacher gives a class probability of at least 0.9, with that class.

  # the teacher: the 1,000 labelled examples alone (100 passes over them)
  kbatch-train --config=configs/self_training_mnist1d.py --config.num_epochs=100 --config.model_dir=runs/teacher
  # the student
  kbatch-train --config=configs/self_training_mnist1d.py --config.teacher=runs/teacher

The learning rate follows the square-root rule (lr ~ sqrt(B)): while the pseudo-labels are noisy,
what should stay the same at every batch size is the noise of each update, lr x sqrt(tr Sigma / B)
(Krizhevsky 2014; Hoffer et al. 2017), not the linear rule's lr / B (Goyal et al. 2017);
docs/results/self_training.md measures both.
"""

from kbatch.configs import mnist1d_cnn


def get_config():
    config = mnist1d_cnn.get_config()
    config.labelled_examples = 1000
    config.teacher = None  # a finished run's folder or a .keras file: --config.teacher=runs/teacher
    config.pseudo_label_threshold = 0.9
    config.lr_scaling = "sqrt"
    config.num_epochs = 8
    config.target_accuracy = None
    return config
