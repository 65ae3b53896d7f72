"""A plain Keras `fit` script taken to an 8x batch with kbatch, step by step (docs/keras_fit.md).

  python examples/keras_fit_large_batch.py                       # batch 32, then 256, side by side
  python examples/keras_fit_large_batch.py --optimizer=adam --multiplier=16
  python examples/keras_fit_large_batch.py --optimizer=lars --accumulation=2

`base_run` is the script as its author wrote it: keras-io's `mnist_convnet` in one dimension
(convolutions, BatchNormalization, a softmax head, `fit`), on noisy sine waves labelled by their
frequency (examples/my_data.py: generated here, nothing is downloaded). `large_batch_run` is the
same script after the guide's steps, each marked STEP N. It runs on every Keras backend.
"""

import argparse
import math
import os
import sys
import tempfile
import time

import kbatch  # first: it imports TensorFlow (where Keras runs on it) without TensorFlow's start-up lines

# isort: split
import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import my_data  # noqa: E402

# The author's recipes at batch 32. LARS's rate is per layer (rate x trust x |w| / |g|), so it is
# not the SGD rate: docs/keras_fit.md, "Picking a LARS rate", has the scan that chose 2.
BASE = {
    "sgd": kbatch.scaling.Recipe(batch_size=32, learning_rate=0.05, num_epochs=8, momentum=0.9),
    "adam": kbatch.scaling.Recipe(batch_size=32, learning_rate=1e-3, num_epochs=8, adaptive=True),
    "lars": kbatch.scaling.Recipe(batch_size=32, learning_rate=2.0, num_epochs=8, momentum=0.9, weight_decay=1e-4),
}


def build_model(num_classes):
    """The author's model: it ends in a softmax, as keras-io's examples do."""
    return keras.Sequential(
        [
            keras.Input((my_data.LENGTH, 1)),
            keras.layers.Conv1D(32, 5, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(64, 5, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(num_classes, activation="softmax", name="head"),
        ],
        name="convnet",
    )


def make_optimizer(name, recipe, learning_rate, accumulation=1):
    """The optimizer of `recipe` (a `kbatch.scaling.Recipe`) with `learning_rate` (a float or a schedule)."""
    extra = {"gradient_accumulation_steps": accumulation} if accumulation > 1 else {}
    if name == "adam":
        return keras.optimizers.Adam(
            learning_rate, beta_1=recipe.beta_1, beta_2=recipe.beta_2, epsilon=recipe.epsilon, **extra
        )
    if name == "lars":  # biases and norm parameters are out of weight decay and adaptation by default
        return kbatch.optimizers.LARS(
            learning_rate, momentum=recipe.momentum, weight_decay=recipe.weight_decay, **extra
        )
    return keras.optimizers.SGD(learning_rate, momentum=recipe.momentum, **extra)


def compile_and_fit(model, optimizer, data, batch_size, epochs):
    """`compile`, `fit` and `evaluate`: (test accuracy, seconds)."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(data["x"], data["y"], batch_size=batch_size, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return model.evaluate(data["x_test"], data["y_test"], batch_size=1000, verbose=0)[1], seconds


def base_run(name, data, epochs):
    """The author's script: batch 32, the recipe as written."""
    keras.utils.set_random_seed(0)
    recipe = BASE[name]
    model = build_model(data["num_classes"])
    optimizer = make_optimizer(name, recipe, recipe.learning_rate)
    return compile_and_fit(model, optimizer, data, recipe.batch_size, epochs)


def large_batch_run(name, data, epochs, multiplier, accumulation=1, log=print):
    """The same script at `multiplier` x the batch, after the guide's steps; returns
    (test accuracy, seconds, the trained model)."""
    keras.utils.set_random_seed(0)
    base = BASE[name]
    # STEP 1: the batch, and the recipe moved to it. The learning rate by the linear rule (SGD,
    # LARS) or the square-root rule (Adam); Adam's betas and epsilon keep their memory in examples.
    batch_size = base.batch_size * multiplier
    recipe = kbatch.scaling.rescale(base, batch_size)
    log(f"recipe at batch {batch_size}: learning_rate {base.learning_rate:g} -> {recipe.learning_rate:g}")
    if recipe.adaptive:
        log(f"  beta_1 {base.beta_1} -> {recipe.beta_1:.3f}, beta_2 {base.beta_2} -> {recipe.beta_2:.4f}")
    # STEP 2: BatchNormalization normalizes over the base batch's 32 examples again (ghost BN),
    # keeping the model as written; then its moving averages forget at the same rate per example.
    model = kbatch.layers.replace_norms(build_model(data["num_classes"]), "ghost_batch", virtual_batch_size=32)
    moved = kbatch.scaling.rescale_model(model, base.batch_size, batch_size)
    log(str(moved))
    # STEP 3: gradual warmup in front of a cosine decay, both counted in updates.
    updates_per_epoch = math.ceil(len(data["x"]) / batch_size)
    warmup_epochs = kbatch.scaling.warmup_epochs(batch_size, base.batch_size, 0.0, num_epochs=epochs)
    warmup_steps = round(warmup_epochs * updates_per_epoch)
    decay = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, epochs * updates_per_epoch - warmup_steps)
    schedule = kbatch.schedules.Warmup(decay, warmup_steps=warmup_steps)
    # STEP 4 (when the batch does not fit in memory): accumulate gradients over micro-batches;
    # Keras feeds a schedule the micro-step count, PerUpdate reads it at the update count.
    if accumulation > 1:
        schedule = kbatch.schedules.PerUpdate(schedule, accumulation)
    optimizer = make_optimizer(name, recipe, schedule, accumulation)
    accuracy, seconds = compile_and_fit(model, optimizer, data, batch_size // accumulation, epochs)
    return accuracy, seconds, model


def check_saved(model, data, folder):
    """STEP 5: save and load; the loaded model predicts the same and trains on with the same
    exclusions (kbatch's components are registered Keras objects)."""
    path = os.path.join(folder, "large_batch.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    before = model.predict(data["x_test"][:256], verbose=0)
    after = loaded.predict(data["x_test"][:256], verbose=0)
    return float(np.max(np.abs(before - after)))


def load_data(num_train, num_test, noise=1.5):
    """Sine waves under enough noise that the frequency is not always recoverable."""
    (x, y), (x_test, y_test) = my_data.sine_wave_arrays(num_train, num_test, noise=noise)
    return dict(x=x, y=y, x_test=x_test, y_test=y_test, num_classes=len(my_data.FREQUENCIES))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=sorted(BASE), default="sgd", help="the author's optimizer")
    parser.add_argument("--multiplier", type=int, default=8, help="the batch is 32 x this")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per update (Keras's own)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num_train", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.multiplier < 1 or args.accumulation < 1 or (32 * args.multiplier) % args.accumulation:
        parser.error("--multiplier and --accumulation: positive integers, the accumulation dividing 32 x multiplier")
    data = load_data(args.num_train, 2000)
    base_accuracy, base_seconds = base_run(args.optimizer, data, args.epochs)
    accuracy, seconds, model = large_batch_run(args.optimizer, data, args.epochs, args.multiplier, args.accumulation)
    with tempfile.TemporaryDirectory() as folder:
        difference = check_saved(model, data, folder)
    print(f"{'batch':>6} {'test accuracy':>14} {'seconds':>8}")
    print(f"{32:>6} {base_accuracy:>14.3f} {base_seconds:>8.1f}")
    print(f"{32 * args.multiplier:>6} {accuracy:>14.3f} {seconds:>8.1f}")
    print(f"saved and loaded: predictions differ by at most {difference:.1e}")
    return base_accuracy, accuracy, difference


if __name__ == "__main__":
    main()
