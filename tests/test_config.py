"""The project's validators (growenv.validation) and the env config (EnvConfig)."""

import numpy as np
import pytest

from growenv.validation import boolean, choice, integer, real


def test_validators_accept_and_canonicalise():
    assert integer("n", np.int64(3), 1) == 3 and type(integer("n", np.int64(3), 1)) is int
    assert integer("n", None, 1, allow_none=True) is None
    assert real("lr", 1, 0.0) == 1.0 and type(real("lr", 1, 0.0)) is float
    assert real("f", 0.5, 0.0, 1.0, exclusive=True) == 0.5
    assert real("x", None, allow_none=True) is None
    assert choice("kind", "b", ("a", "b")) == "b"
    assert boolean("flag", np.bool_(True)) is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: integer("n", 0, 1), "n: expected an int >= 1, got 0"),
        (lambda: integer("n", True, 0), "n: expected an int >= 0, got True"),
        (lambda: integer("n", 2.0, 0), "n: expected an int >= 0, got 2.0"),
        (lambda: integer("site", 5, 0, 3), "site: expected an int in [0, 3], got 5"),
        (lambda: integer("m", "x", 1, allow_none=True), "m: expected an int >= 1 or None, got 'x'"),
        (lambda: real("lr", -1.0, 0.0), "lr: expected a number >= 0.0, got -1.0"),
        (lambda: real("lr", float("nan"), 0.0), "lr: expected a number >= 0.0, got nan"),
        (lambda: real("lr", "1e-3"), "lr: expected a number, got '1e-3'"),
        (
            lambda: real("f", 1.0, 0.0, 1.0, exclusive=True),
            "f: expected a number in (0.0, 1.0), got 1.0",
        ),
        (lambda: choice("kind", "c", ("a", "b")), "kind: expected one of 'a', 'b', got 'c'"),
        (lambda: choice("kind", ["a"], ("a", "b")), "kind: expected one of 'a', 'b', got ['a']"),
        (lambda: boolean("flag", 1), "flag: expected True or False, got 1"),
    ],
)
def test_validators_reject_with_one_line(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message
