"""Two augmented views of each example (`kbatch.data.two_views`): the views of a stream position
are the same however its batch is read (whole, in row ranges as JAX processes read it, or by a
new source object), two views differ, and each augmentation does what its docstring says."""

import numpy as np
import pytest

import kbatch
from kbatch.data.sources import views

pytestmark = pytest.mark.fast


def _signals(n=600, length=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, length, 1)).astype(np.float32), rng.integers(0, 10, n)


def _two_views(augment="signal"):
    x, y = _signals()
    return kbatch.data.two_views(kbatch.data.from_arrays(x, y, eval=(x[:50], y[:50])), augment)


def test_a_positions_views_do_not_depend_on_how_its_batch_is_read():
    whole, _ = _two_views().examples_at(200, 712, seed=3)  # across block boundaries 256 and 512
    parts = [_two_views().examples_at(a, b, seed=3)[0] for a, b in ((200, 300), (300, 511), (511, 712))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert whole.shape == (512, 2, 40, 1)
    assert not np.allclose(whole[:, 0], whole[:, 1])  # two different views
    other_seed, _ = _two_views().examples_at(200, 712, seed=4)
    assert not np.allclose(other_seed, whole)


def test_describe_and_evaluation_give_two_views_too():
    source = _two_views()
    info = source.describe()
    assert info.input_shape == (2, 40, 1) and info.input_spec.shape == (2, 40, 1)
    (x, y), again = next(iter(source.eval_chunks())), next(iter(_two_views().eval_chunks()))
    assert x.shape == (50, 2, 40, 1) and len(y) == 50
    np.testing.assert_array_equal(x, again[0])  # fixed views for every evaluation


def test_the_signal_augmentation_is_a_shift_a_scale_a_shear_and_noise_smooth_and_white():
    x, _ = _signals(n=1)
    out = views.augment_signal(x, np.random.default_rng(5), smooth_noise=0.0, noise=0.0)
    replay = np.random.default_rng(5)  # the same draws, in the function's order
    shift, factor = replay.integers(-8, 9, size=1)[0], replay.uniform(0.8, 1.2, size=(1, 1, 1)).item()
    shear = replay.uniform(-1.0, 1.0, size=(1, 1, 1)).item()
    ramp = np.linspace(-0.5, 0.5, 40)[:, None]
    np.testing.assert_allclose(out[0], np.roll(x[0], shift, axis=0) * factor - shear * ramp, rtol=1e-5, atol=1e-6)
    silent = np.zeros((2000, 40, 1), np.float32)  # the smooth noise alone
    smooth = views.augment_signal(silent, np.random.default_rng(6), shear=0.0, smooth_noise=0.5, noise=0.0)[..., 0]
    assert 0.48 < smooth.std() < 0.52
    assert 0.85 < _correlation(smooth, 1) < 0.95 and abs(_correlation(smooth, 10)) < 0.05  # neighbours alike
    signals, _ = _signals(n=2000)
    plain, noisy = (views.augment_signal(signals, np.random.default_rng(7), noise=noise) for noise in (0.0, 0.05))
    white = (noisy - plain)[..., 0]
    assert 0.045 < white.std() / signals.std() < 0.055 and abs(_correlation(white, 1)) < 0.05


def _correlation(values, lag):
    """The correlation of positions `lag` apart (circularly) over examples [n, length]."""
    return np.corrcoef(values.ravel(), np.roll(values, lag, axis=1).ravel())[0, 1]


def test_the_image_augmentation_is_a_crop_of_the_padded_image_maybe_flipped():
    image = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    out = views.augment_image(image, np.random.default_rng(1))
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for k in range(2):
        crops = [padded[k, r : r + 8, c : c + 8] for r in range(9) for c in range(9)]
        assert any(np.array_equal(out[k], crop) or np.array_equal(out[k], crop[:, ::-1]) for crop in crops)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="augment='blur' must be one of signal, image or a function"):
        _two_views("blur")
    with pytest.raises(TypeError, match="must say which example each position holds"):
        x, y = _signals(n=8)
        kbatch.data.two_views(kbatch.data.from_iterable(lambda: iter([(x, y)]), eval=[(x, y)], num_train_examples=8))
