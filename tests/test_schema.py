"""The one table of config fields: the README shows it, the defaults and every check come from
it, and each field refuses a bad value in one line naming it."""

import pathlib
import re

import pytest

from kbatch.training.config import schema

pytestmark = pytest.mark.fast

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_readme_field_table_is_the_schema():
    shown = re.search(r"<!-- fields -->\n(.*?)<!-- /fields -->", README, re.S).group(1)
    assert shown == schema.markdown_table()
    listed = re.findall(r"^\| `(\w+)` \|", shown, re.M)
    assert listed == list(schema.NAMES)


def test_the_defaults_resolve_to_themselves():
    settings = schema.resolve(schema.defaults())
    for field in schema.FIELDS:
        assert getattr(settings, field.name) == field.default, field.name


def test_a_partial_config_is_completed_with_the_defaults():
    settings = schema.resolve({"batch_size": 512})
    assert settings.batch_size == 512 and settings.num_epochs == schema.defaults().num_epochs


@pytest.mark.parametrize(
    "field, bad",
    [
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("num_epochs", -1),
        ("bn_momentum", 1.5),
        ("momentum", 1.0),
        ("base_learning_rate", float("nan")),
        ("warmup_epochs", -0.5),
        ("decay", "exponential"),
        ("rescale_recipe", "yes"),
        ("jit_compile", 1),
        ("checkpoint_every", -1),
        ("async_checkpoints", "yes"),
        ("seed", 1.5),
        ("model", "vgg"),
        ("strategy", "cpu:x"),
        ("backend", "torch"),
        ("virtual_batch_size", 0),
        ("batch_sizes", (64, -1)),
        ("decay_boundaries", "3"),
        ("exclude_from_weight_decay", ("bias(",)),
        ("model_dir", ""),
        ("epsilon", -1.0),
    ],
)
def test_each_field_refuses_a_bad_value_in_one_line_naming_it(field, bad):
    with pytest.raises(ValueError) as error:
        schema.resolve({field: bad})
    message = str(error.value)
    assert message.startswith(f"config.{field}") and "\n" not in message


def test_asynchronous_checkpoints_are_orbaxs_so_jax_only():
    assert schema.resolve({"async_checkpoints": True, "backend": "jax"}).async_checkpoints is True
    with pytest.raises(ValueError, match=r"^config.async_checkpoints=True: .*backend='jax' only \(got 'tensorflow'\)"):
        schema.resolve({"async_checkpoints": True})


def test_an_unknown_field_is_named_with_the_closest_known_ones():
    with pytest.raises(ValueError, match=r"^config.num_epoch: no such field \(did you mean num_epochs\b"):
        schema.resolve({"num_epoch": 3})


@pytest.mark.parametrize("value, expected", [("linear", "linear"), ("0.5", 0.5), (0.75, 0.75), ("none", "none")])
def test_lr_scaling_takes_a_rule_or_an_exponent(value, expected):
    assert schema.resolve({"lr_scaling": value}).lr_scaling == expected


def test_settings_are_frozen():
    settings = schema.resolve({})
    with pytest.raises(Exception):
        settings.batch_size = 1
