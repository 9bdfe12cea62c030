"""The flows served and deployed come from one registration each (gancore_flows.serve.FLOWS), and a
deployment's description is its flow's own: a new flow needs its module and one entry, nothing else."""

from __future__ import annotations

from gancore_flows import serve
from helpers import PARAMS


def test_every_registered_flow_is_deployed_with_its_own_description():
    flows = serve.flows()
    assert [f.name for f in flows] == ["gan-pipeline", "gan-sweep", "gan-mixture", "gan-remedy"]
    deployments = serve.deployments(PARAMS)
    assert [d.flow_name for d in deployments] == [f.name for f in flows]
    for flow, deployment in zip(flows, deployments, strict=True):
        assert flow.description and deployment.description == flow.description
        assert deployment.parameters == {"params_file": str(PARAMS.resolve())}


def test_a_flow_registered_with_a_description_is_served_without_other_changes(monkeypatch):
    """A throwaway flow module, registered by one entry, deploys: no table elsewhere to update."""
    import sys
    import types

    from prefect import flow

    module = types.ModuleType("gancore_flows.throwaway")

    @flow(name="gan-throwaway", description="a flow added by one file and one registration")
    def gan_throwaway(params_file: str = "params.yaml") -> None:
        return None

    module.gan_throwaway = gan_throwaway  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gancore_flows.throwaway", module)
    monkeypatch.setattr(serve, "FLOWS", (*serve.FLOWS, "throwaway:gan_throwaway"))
    deployed = {d.flow_name: d.description for d in serve.deployments(PARAMS)}
    assert deployed["gan-throwaway"] == "a flow added by one file and one registration"
    assert len(deployed) == 5
