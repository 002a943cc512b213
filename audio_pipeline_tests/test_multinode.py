"""The multi-node fixture itself: separate raylets on loopback form one cluster."""

import pytest

from .helpers import LOOPBACK, listening_addresses


@pytest.mark.slow
def test_head_and_workers_form_one_loopback_cluster(multinode_ray):
    multinode_ray.join_late()
    nodes = multinode_ray.wait_nodes(3)
    assert len(nodes) == 3
    assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}
    assert len({n["node_id"] for n in nodes}) == 3
    assert [n["resources_total"].get("GPU") for n in nodes] == [1.0, 1.0, 1.0]
    info = multinode_ray.compute.cluster_info()
    assert (info["nodes"], info["cpus"], info["gpus"]) == (3, 6, 3)
    # every node's processes are the keeper's: none listens beyond loopback
    listening = listening_addresses(multinode_ray.cluster.proc.pid)
    assert listening and {addr.ip for addr in listening} <= LOOPBACK, listening
