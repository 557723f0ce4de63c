"""The differential property, generated for every (op x adapter x path) from the op table:
the adapter's result equals the golden op's within the op's error model."""
from hypothesis import given
from hypothesis import strategies as st

from properties.ops import OPS


@given(data=st.data())
def test_matches_golden(target, edgediff_run, data):
    case = data.draw(OPS[target.op].strategy(specials=edgediff_run.specials), label="case")
    edgediff_run.check(target, case)
