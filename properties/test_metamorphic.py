"""Metamorphic properties, per adapter: relations between the adapter's own results."""
from hypothesis import given
from hypothesis import strategies as st

from properties.relations import RELATIONS, run_relation


@given(data=st.data())
def test_relation_holds(relation_target, edgediff_run, data):
    relation = RELATIONS[relation_target.op]
    case = data.draw(relation.strategy(specials=False), label="case")
    edgediff_run.account(relation_target, run_relation(relation, case, relation_target.adapter,
                                                       relation_target.path))
