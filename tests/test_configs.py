"""Every shipped config validates, and the CIFAR-10 ResNet-20 config trains a few steps on TFDS
mock data (the real data needs a download)."""

import importlib
import pathlib

import pytest
import tensorflow_datasets as tfds

from kbatch.training import train, validate

pytestmark = pytest.mark.fast

CONFIGS = sorted(
    p.stem for p in (pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py") if p.stem != "__init__"
)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_is_accepted_and_a_broken_copy_is_refused(name):
    config = importlib.import_module(f"kbatch.configs.{name}").get_config()
    assert validate(config) is None
    config.batch_size = 0
    with pytest.raises(ValueError, match=r"config.batch_size=0: must be a positive integer"):
        validate(config)


def test_cifar10_resnet20_trains_on_mock_data_and_is_the_paper_model(tmp_path):
    from kbatch.configs import cifar10_resnet20

    config = cifar10_resnet20.get_config()
    config.update(
        batch_size=32,
        num_epochs=1,
        warmup_epochs=0.5,
        steps_per_loop=2,
        strategy="cpu:2",
        model_dir=str(tmp_path / "run"),
        jit_compile=False,
    )
    seen = {}

    def model_fn(info):
        import kbatch

        model = kbatch.models.get("resnet20", num_classes=info.num_classes, input_shape=info.input_shape)
        seen["model"] = model
        return model

    with tfds.testing.mock_data(num_examples=64):
        result = train(config, model_fn=model_fn, verbose=False)
    assert result["steps"] == 2 and result["examples_seen"] == 64
    # He et al. 2016, table 6: ResNet-20 has 0.27M parameters (20 weighted layers).
    assert round(seen["model"].count_params() / 1e6, 2) == 0.27
    convs_and_dense = [
        layer
        for layer in seen["model"].layers
        if layer.__class__.__name__ in ("Conv2D", "Dense") and not layer.name.endswith("_proj")
    ]
    assert len(convs_and_dense) == 20
