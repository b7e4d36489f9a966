"""Placing a new session across nodes: full or draining nodes are skipped; reports of older nodes
(no `full` field) count as not full."""

from __future__ import annotations

import orjson
import pytest

from sfu.cluster.redis_nodes import NodeInfo
from sfu.cluster.redis_placement import choose_node


def node(node_id: str, region: str = "eu", cpu: float = 0.5, *, full: bool = False,
         draining: bool = False) -> NodeInfo:
    return NodeInfo(node_id, f"http://{node_id}:1", region, cpu=cpu, draining=draining, full=full)


@pytest.mark.parametrize(
    ("nodes", "chosen"),
    [
        ([node("n_a", cpu=0.2), node("n_b", cpu=0.9)], "n_a"),  # least CPU wins
        ([node("n_a", cpu=0.2, full=True), node("n_b", cpu=0.9)], "n_b"),  # a full node is skipped
        ([node("n_a", full=True), node("n_b", draining=True)], None),  # nowhere to go
        ([node("n_a", cpu=0.1, region="us"), node("n_b", cpu=0.9)], "n_b"),  # own region first
        ([node("n_a", cpu=0.1, region="us"), node("n_b", full=True)], "n_a"),  # own region full: any
        ([node("n_b"), node("n_a")], "n_a"),  # a tie goes to the lower id
        ([], None),
    ],
)
def test_choose_node_takes_the_least_loaded_node_that_is_not_full(nodes: list[NodeInfo],
                                                                  chosen: str | None) -> None:
    best = choose_node(nodes, "eu")
    assert (best.node_id if best is not None else None) == chosen


def test_a_report_without_the_full_field_is_not_full() -> None:
    body = node("n_a", full=True).to_wire()
    assert NodeInfo.from_json(orjson.dumps(body)).full is True
    del body["full"]
    assert NodeInfo.from_json(orjson.dumps(body)) == node("n_a")
