"""Fuzzing TrainConfig: any value for any field is either accepted by the field's rule or
refused with a RiswbError of one line that names the field — never another exception."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riswb.errors import RiswbError
from riswb.reference.config import RULES, TrainConfig, check_field

FIELDS = sorted(RULES)
REALS = sorted(name for name, rule in RULES.items() if rule.kind == "real")
INTS = sorted(name for name, rule in RULES.items() if rule.kind == "int")

anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.floats(), st.booleans()), max_size=2),
)


def _refused(field: str, value) -> str:
    with pytest.raises(RiswbError) as info:
        TrainConfig.from_dict({field: value})
    message = str(info.value)
    assert "\n" not in message and f"{field} must be" in message, message
    return message


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=anything)
def test_any_value_is_accepted_by_its_rule_or_refused_naming_the_field(field, value):
    try:
        cfg = TrainConfig.from_dict({field: value})
    except RiswbError:
        _refused(field, value)
        assert check_field(field, value) is not None
        return
    assert check_field(field, value) is None
    assert getattr(cfg, field) == value or (field, value) == ("clip_norm", 0)  # 0: None


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(REALS),
       value=st.sampled_from([math.nan, math.inf, -math.inf, 10**400, True, "1e-3", [1.0]]))
def test_non_finite_or_non_numeric_reals_are_refused(field, value):
    _refused(field, value)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(INTS),
       value=st.one_of(st.floats(allow_nan=True).filter(lambda v: not float(v).is_integer()),
                       st.booleans(), st.integers(max_value=-1), st.just(2.0), st.just("4"),
                       st.integers(min_value=2**63)))
def test_non_integers_negatives_and_huge_ints_are_refused(field, value):
    _refused(field, value)


@settings(max_examples=50, deadline=None)
@given(option=st.sampled_from([("--samples", "train_scenes"), ("--epochs", "epochs"),
                               ("--seed", "seed")]),
       value=st.one_of(st.text(max_size=5), st.integers(max_value=0), st.floats()))
def test_cli_option_problems_name_the_option(option, value):
    label, field = option
    problem = check_field(field, value, label=label)
    if problem is not None:
        assert problem.startswith(f"{label} must be") and "\n" not in problem
