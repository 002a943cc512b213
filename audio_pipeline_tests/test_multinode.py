"""The multi-node fixture itself: separate raylets on loopback form one cluster."""

import pytest


def listening_addresses(pid: int) -> set[str]:
    import psutil

    root = psutil.Process(pid)
    return {
        c.laddr.ip
        for p in [root, *root.children(recursive=True)]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


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
    head = multinode_ray.head
    pids = [int(head.pid_file.read_text())]
    pids += [int(p.read_text()) for p in head.state_dir.glob("worker-*.pid")]
    assert len(pids) == 3
    for pid in pids:
        assert listening_addresses(pid) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
