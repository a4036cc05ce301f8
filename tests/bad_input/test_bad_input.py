"""Every file or config in the bad-input corpus: exit 2, one message naming the file/column/key, no traceback."""
import pytest

from tests.bad_input.corpus import CASES, escaped
from tests.conftest import invoke


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_naming_the_culprit(name, tmp_path):
    argv, needles = CASES[name](tmp_path)
    r = invoke(*argv)        # an unexpected exception (a traceback for the user) propagates and fails here
    assert r.exit_code == 2, r
    assert "Traceback" not in r.stderr + r.stdout
    message = " ".join(r.stderr.split())     # Rich may wrap long lines
    missing = [n for n in needles if n not in message]
    assert not missing, f"{missing} not in: {message}"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("record.json")), \
        "refused input must not leave a record"
    assert not escaped(tmp_path)
