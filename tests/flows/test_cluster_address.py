"""--address is checked before anything runs: another kind's scheme (Ray said "Module: tcp does not
exist" in a traceback), no port, or nothing answering there (Dask tried for 30 s and ended in a
traceback; gan-remedy found out only after its baseline had trained) is a usage error, exit 2."""

from __future__ import annotations

import socket

import pytest

from gancore.errors import ParamsError
from gancore_flows.runners import check_cluster, cluster_problem, task_runner
from helpers import PARAMS, free_port


@pytest.fixture
def listening():
    """A port something answers on, as a scheduler would."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_an_address_of_the_right_kind_that_answers_passes(listening):
    assert cluster_problem("dask", f"tcp://127.0.0.1:{listening}") is None
    assert cluster_problem("dask", f"127.0.0.1:{listening}") is None  # Dask reads a bare host:port as tcp
    assert cluster_problem("ray", f"ray://127.0.0.1:{listening}") is None
    assert cluster_problem("ray", f"127.0.0.1:{listening}") is None  # a GCS address, from a machine of the cluster
    assert cluster_problem("ray", "auto") is None
    assert all(cluster_problem(kind, None) is None for kind in ("process", "dask", "ray"))


@pytest.mark.parametrize(
    ("kind", "address", "said"),
    [
        ("process", "tcp://127.0.0.1:8786", "--address is for --runner dask or ray"),
        ("ray", "tcp://127.0.0.1:8786", "'tcp://127.0.0.1:8786' is not an address of a Ray cluster (tcp://); use ray://host:10001"),
        ("dask", "ray://127.0.0.1:10001", "'ray://127.0.0.1:10001' is not an address of a Dask scheduler (ray://); use tcp://host:8786"),
        ("dask", "tcp://127.0.0.1", "'tcp://127.0.0.1' names no host:port; use tcp://host:8786"),
        ("ray", "ray://head", "'ray://head' names no host:port"),
    ],
)
def test_an_address_of_another_kind_or_without_a_port_is_refused_without_connecting(kind, address, said):
    assert said in cluster_problem(kind, address, probe=False)
    with pytest.raises(ValueError, match="--address is for|is not an address of|names no host:port"):
        task_runner(kind, 2, address)  # the flows' own check, whatever called them


def test_nothing_answering_is_said_at_once_with_how_to_start_a_cluster():
    port = free_port()
    problem = cluster_problem("dask", f"tcp://127.0.0.1:{port}")
    assert problem.startswith(f"nothing answers at tcp://127.0.0.1:{port} (Connection refused): start a Dask scheduler there")
    assert "leave --address out to start a local cluster" in problem
    assert "`ray start --head`" in cluster_problem("ray", f"ray://127.0.0.1:{port}")
    with pytest.raises(ParamsError, match=r"address: nothing answers at"):
        check_cluster("dask", f"tcp://127.0.0.1:{port}")


@pytest.mark.parametrize("flow", ["sweep", "mixture", "remedy"])
def test_the_flows_clis_refuse_a_bad_address_with_exit_2_before_prefect_starts(flow, capsys):
    import importlib

    main = importlib.import_module(f"gancore_flows.{flow}").main
    port = free_port()
    assert main(["--params", str(PARAMS), "--runner", "dask", "--address", f"tcp://127.0.0.1:{port}"]) == 2
    assert f"gan-{flow}: --address: nothing answers at tcp://127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["--params", str(PARAMS), "--runner", "ray", "--address", f"tcp://127.0.0.1:{port}"]) == 2
    assert "is not an address of a Ray cluster" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["worker", "serve"])
@pytest.mark.parametrize(
    ("option", "said"),
    [("--port=99999", "99999 is no TCP port"), ("--limit=-1", "'-1' is not a whole number"), ("--limit=0", "'0' is not")],
)
def test_make_worker_and_serve_refuse_a_bad_port_or_limit_before_starting_anything(module, option, said, capsys):
    """--port 99999 ended in a traceback (rc 1); --limit -1 started the server and deployed the
    flows before Prefect refused it; --limit 0 meant "no limit" (a review)."""
    import importlib

    with pytest.raises(SystemExit) as exited:
        importlib.import_module(f"gancore_flows.{module}").main([option])
    assert exited.value.code == 2 and said in capsys.readouterr().err
