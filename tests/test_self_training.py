"""Self-training (`kbatch.data.sources.pseudo_labels`, config fields `labelled_examples`,
`teacher`, `pseudo_label_threshold`): the labelled part is the first N examples of a fixed order,
the teacher's confident predictions label the rest (checked against the teacher's own softmax,
computed here in NumPy), and what cannot work is one line before anything is written."""

import os

import keras
import numpy as np
import pytest

import kbatch
from kbatch.data.sources import pseudo_labels

pytestmark = pytest.mark.components


def _source(n=200):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)
    return kbatch.data.from_arrays(x, y, eval=(x[:20], y[:20]), num_classes=4)


def test_the_labelled_part_keeps_its_labels_and_the_confident_rest_takes_the_teachers(monkeypatch):
    monkeypatch.setattr(pseudo_labels, "CHUNK", 100)
    source = _source()
    x, y = source.examples_at(0, 200, pseudo_labels.SPLIT_SEED)
    probabilities = np.random.default_rng(1).dirichlet(np.ones(4) * 0.3, size=150)  # the teacher's, for x[50:]
    predict = iter(np.split(probabilities, [100]))  # called in chunks: 100 examples each, here
    data, report = pseudo_labels.pseudo_labelled(source, 50, lambda chunk: next(predict), threshold=0.7)
    keep = probabilities.max(axis=1) >= 0.7
    got_x, got_y = data.x, data.y
    np.testing.assert_array_equal(got_x[:50], x[:50])
    np.testing.assert_array_equal(got_y[:50], y[:50])
    np.testing.assert_array_equal(got_x[50:], x[50:][keep])
    np.testing.assert_array_equal(got_y[50:], probabilities.argmax(axis=1)[keep])
    assert (report.labelled, report.unlabelled, report.kept) == (50, 150, keep.sum()) and 0 < keep.sum() < 150
    assert report.noise == pytest.approx(np.mean(probabilities.argmax(axis=1)[keep] != y[50:][keep]))
    assert data.describe().num_classes == 4 and len(data.y_eval) == 20


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished run trained on the first 500 examples of mnist1d/original only."""
    from tests.conftest import small_config

    config = small_config(tmp_path_factory.mktemp("teacher"), labelled_examples=500, batch_size=50)
    config.base_batch_size, config.num_epochs = 50, 3
    result = kbatch.training.train(config, verbose=False)
    assert result["examples_seen"] == 3 * 500  # trained on its 500 labelled examples only
    return config.model_dir


def test_the_student_trains_on_the_labelled_examples_and_the_teachers_confident_labels(make_config, teacher, capsys):
    config = make_config(teacher=teacher, labelled_examples=500, pseudo_label_threshold=0.8)
    run = kbatch.training.build_run(config)
    try:
        x_rest = kbatch.data.sources.get("mnist1d/original").examples_at(0, 4000, pseudo_labels.SPLIT_SEED)[0][500:]
        logits = keras.ops.convert_to_numpy(keras.models.load_model(os.path.join(teacher, "model.keras"))(x_rest))
        logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        confident = np.exp(logits).max(axis=1) / np.exp(logits).sum(axis=1) >= 0.8
        assert 0 < confident.sum() < 3500
        assert run.info.num_train_examples == 500 + confident.sum()
        said = capsys.readouterr().out
        assert f"500 labelled examples and {confident.sum():,} of 3,500 labelled by the teacher" in said
    finally:
        run.close()


def _five_class_model(path):
    inputs = keras.Input((40, 1))
    keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs))).save(path)
    return str(path)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(teacher="FIVE", labelled_examples=100), r"^config.teacher='.*': the teacher predicts 5 classes"),
        (dict(teacher="FIVE"), r"^config.teacher='.*': needs config.labelled_examples > 0"),
        (dict(teacher="/no/such/run", labelled_examples=100), r"^config.teacher='/no/such/run': no such file"),
        (dict(labelled_examples=4000), r"^config.labelled_examples=4000: must be between 1 and 3999"),
        (dict(labelled_examples=10, task="next_token"), r"^config.task='next_token': self-training"),
    ],
)
def test_what_cannot_self_train_is_one_line_and_nothing_is_written(make_config, tmp_path, fields, message):
    if fields.get("teacher") == "FIVE":
        fields["teacher"] = _five_class_model(tmp_path / "five.keras")
    config = make_config(**fields)
    with pytest.raises(ValueError, match=message):
        kbatch.training.build_run(config)
    assert not os.path.exists(config.model_dir)
