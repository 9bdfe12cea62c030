"""The flows' parameters carry their bounds into Prefect's schema: the run form, the API and
`prefect deployment run` refuse an out-of-range value when the run is created (it created a run
that failed as it started, with "Flow run finished in state 'Failed'" and nothing more)."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError

from gancore_flows.mixture import gan_mixture
from gancore_flows.mixture import main as mixture_main
from gancore_flows.params import TrainOverrides
from gancore_flows.pipeline import gan_pipeline
from gancore_flows.remedy import gan_remedy
from gancore_flows.sweep import gan_sweep
from gancore_flows.sweep import main as sweep_main


def test_params_yaml_bounds_reach_the_form_schema():
    steps = TrainOverrides.model_json_schema()["properties"]["steps"]
    assert {"type": "integer", "exclusiveMinimum": 0} in steps["anyOf"]
    batch = TrainOverrides.model_json_schema()["properties"]["batch_size"]["anyOf"]
    assert {"type": "integer", "exclusiveMinimum": 0} in batch and {"const": "auto", "type": "string"} in batch
    seed = gan_pipeline.parameters.model_dump()["properties"]["seed"]
    assert {"type": "integer", "minimum": 0, "exclusiveMaximum": 2**32} in seed["anyOf"]
    assert TrainOverrides(steps=5, batch_size="auto").steps == 5  # in range: as before


@pytest.mark.parametrize(
    "flow, parameters, message",
    [
        (gan_pipeline, {"train": {"steps": -5}}, "train.steps: Input should be greater than 0"),
        (gan_pipeline, {"seed": -1}, "seed: Input should be greater than or equal to 0"),
        (gan_sweep, {"seeds": [-1]}, "seeds.0: Input should be greater than or equal to 0"),
        (gan_sweep, {"seeds": [2**32]}, "seeds.0: Input should be less than 4294967296"),
        (gan_sweep, {"seeds": []}, "seeds: List should have at least 1 item"),
        (gan_sweep, {"archs": []}, "archs: List should have at least 1 item"),
        (gan_sweep, {"workers": 0}, "workers: Input should be greater than or equal to 1"),
        (gan_remedy, {"repeats": 0}, "repeats: Input should be greater than or equal to 1"),
        (gan_mixture, {"workers": 0}, "workers: Input should be greater than or equal to 1"),
    ],
)
def test_out_of_range_flow_parameters_are_refused_by_name(flow, parameters, message):
    with pytest.raises(ParameterTypeError, match=message):
        flow.validate_parameters(parameters)


@pytest.mark.parametrize("main", [sweep_main, mixture_main])
def test_workers_below_one_is_a_usage_error(main, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--workers", "0"])
    assert exit_.value.code == 2
    assert "--workers: '0' is not a whole number of 1 or more" in capsys.readouterr().err


def test_a_bad_sets_entry_is_named_as_the_flow_names_it():
    """In a flow run a bad `sets` entry was said to come "with --set", and beside typed overrides
    the message named only those ("with flow parameters {...}")."""
    from gancore.config import ParamsError
    from gancore_flows.params import resolve_params
    from helpers import PARAMS

    with pytest.raises(ParamsError, match=r"params.yaml with sets \['train.steps=0'\]:\n  train.steps: "):
        resolve_params(PARAMS, None, ["train.steps=0"])
    with pytest.raises(ParamsError, match=r"params.yaml with flow parameters \{'seed': 3\} and sets \['train.steps=0'\]:"):
        resolve_params(PARAMS, {"seed": 3}, ["train.steps=0"])
    assert resolve_params(PARAMS, {"seed": 3}, ["train.steps=7"]).train.steps == 7
