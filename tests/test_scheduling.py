"""How the suite's two workers share the tests (tests/conftest.py): a test file that defines a
module-scoped fixture is one unit of work, so one worker builds the fixture once; every other
test is its own unit."""

import conftest
import pytest

pytestmark = pytest.mark.fast


def test_a_file_with_a_module_fixture_is_one_unit_and_any_other_test_its_own(request):
    scheduling = conftest.SharedFixtureScheduling.__new__(conftest.SharedFixtureScheduling)  # no workers here
    scheduling.config = request.config
    for path in ("tests/test_sweep.py", "tests/test_faults.py"):  # tiny_sweep, uninterrupted
        assert scheduling._split_scope(f"{path}::test_x[a]") == scheduling._split_scope(f"{path}::test_y") == path
    alone = "tests/test_kbatch_cli.py::test_outputs_are_refused_unless_they_can_be_written"
    assert scheduling._split_scope(alone) == alone
