"""The differential property, generated for every (op x adapter x path) from the op table:
the adapter's result equals the golden op's within the op's error model.

An adapter may declare ``values_per_structure`` (an int, or a function of op and path): each
drawn structure (op, shapes,
params, layout) is then checked with k value sets, so a backend that compiles a program per
structure (ExecuTorch) reuses it k times."""
from hypothesis import given
from hypothesis import strategies as st

from properties.ops import OPS
from properties.strategies import same_structure


@given(data=st.data())
def test_matches_golden(target, edgediff_run, data):
    case = data.draw(OPS[target.op].strategy(specials=edgediff_run.specials), label="case")
    edgediff_run.check(target, case)
    # Slow backends compile one program per structure: check more value sets on it.
    for i in range(values_per_structure(target) - 1):
        edgediff_run.check(target, data.draw(same_structure(case, edgediff_run.specials),
                                             label=f"values {i + 2}"))


def values_per_structure(target) -> int:
    k = getattr(target.adapter, "values_per_structure", 1)
    return int(k(target.op, target.path) if callable(k) else k)
