"""Typed flow parameters: one optional override model per section of params.yaml.

The models are generated from :class:`gancore.config.Params`, so every key of params.yaml is a
form field in the Prefect UI (with its type and description) and can be overridden from the
command line, e.g.::

    prefect deployment run 'gan-pipeline/default' --param train='{"steps": 500}'
    prefect deployment run 'gan-pipeline/default' --params '{"model": {"arch": "dcgan"}, "data": {"name": "mnist"}}'

A field left empty (``None``) keeps params.yaml's value; params.yaml stays the one source of
defaults. (To set a nullable key to null, put it in a parameter file: ``params_file``.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from gancore.config import AUTO_TRAIN, SEED_LIMIT, Params, TrainParams, load_params, validate
from gancore.params_tree import apply_overrides, read_params_tree

_FORM_CONFIG = ConfigDict(extra="forbid", frozen=True)

# The flows' own arguments, with their bounds in the signature: Prefect's form, its schema and
# `prefect deployment run` refuse them when the run is created (an empty sweep or -1 workers
# created runs that failed as they started).
Workers = Annotated[int, Field(ge=1, description="runs at once, 1 or more")]
Repeats = Annotated[int, Field(ge=1, description="training seeds per configuration, 1 or more")]
Seeds = Annotated[list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]], Field(min_length=1)]


def _constrained(field: FieldInfo) -> Any:
    """The field's type with its bounds (``gt=0``...): the form and the JSON schema refuse a
    negative step count when the run is created, not when its flow starts."""
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _override_model(section: type[BaseModel]) -> type[BaseModel]:
    # train.batch_size / lr_g / lr_d take "auto" in params.yaml (resolved by the data's kind)
    auto = AUTO_TRAIN["vector"] if section is TrainParams else {}
    fields: dict[str, Any] = {
        name: (
            Optional[Union[_constrained(field), Literal["auto"]]] if name in auto else Optional[_constrained(field)],
            Field(None, description=f"{field.description or ''} (empty: params.yaml's value)".strip()),
        )
        for name, field in section.model_fields.items()
    }
    model = create_model(section.__name__.replace("Params", "Overrides"), __config__=_FORM_CONFIG, **fields)
    model.__module__ = __name__
    return model


SECTIONS: dict[str, type[BaseModel]] = {
    name: _override_model(field.annotation)
    for name, field in Params.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
# Module-level names, so that the generated classes are importable (pickling, process pools).
DataOverrides = SECTIONS["data"]
ModelOverrides = SECTIONS["model"]
LossOverrides = SECTIONS["loss"]
TrainOverrides = SECTIONS["train"]
SampleOverrides = SECTIONS["sample"]
EvaluateOverrides = SECTIONS["evaluate"]
DiagnoseOverrides = SECTIONS["diagnose"]
MixtureOverrides = SECTIONS["mixture"]
AugmentOverrides = SECTIONS["augment"]
TrackingOverrides = SECTIONS["tracking"]
SCALARS = tuple(name for name in Params.model_fields if name not in SECTIONS)  # seed, device

F = TypeVar("F", bound=Callable[..., Any])


def section_parameters(fn: F) -> F:
    """Give a flow function one keyword parameter per section of params.yaml (``data``, ``model``,
    ..., an override model each) plus ``seed`` and ``device``, after its own parameters.

    Prefect builds the flow's typed form (and validates calls) from the signature, so every flow
    that runs the pipeline gets the same fields without repeating them; the function receives them
    in ``**overrides``.
    """
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=model(), annotation=model) for name, model in SECTIONS.items()]
    extra += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[_constrained(Params.model_fields[name])])
        for name in SCALARS
    ]
    fn.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    return fn


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def override_tree(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{section: model or dict or None, seed: int or None, ...}`` -> the nested values that were set."""
    tree: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_none=True)
        elif isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value != {}:
            tree[name] = value
    return tree


def resolve_params(params_file: str | Path, overrides: dict[str, Any] | None = None, sets: list[str] | None = None) -> Params:
    """params.yaml, then the typed overrides, then ``key.path=value`` strings; validated as the CLI
    validates (``ParamsError`` names each bad key)."""
    path = Path(params_file)
    tree = override_tree(overrides or {})
    merged = _merge(read_params_tree(path), tree)  # the CLI's checks of the file (duplicate keys, encoding)
    # named as the flow's parameters name them (a bad `sets` entry was said to come "with --set")
    given = ([f"flow parameters {tree}"] if tree else []) + ([f"sets {list(sets)}"] if sets else [])
    return validate(apply_overrides(merged, list(sets or [])), str(path) + (" with " + " and ".join(given) if given else ""))


def member_overrides(base: dict[str, Any], **sets: Any) -> dict[str, Any]:
    """Sweep member: the base overrides with dotted keys set, e.g. ``member_overrides(b, **{"model.arch": "dcgan"})``."""
    tree = override_tree(base)
    for dotted, value in sets.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def form_hints(schema: Any, params_file: str | Path) -> Any:
    """A flow's parameter schema with what the run form should show: each section field's value in
    ``params_file`` as its hint (``examples``, and in its description), and the installed
    architectures as the choices of ``model.arch`` (a plain string in the flow's own schema,
    since plugins are found at run time)."""
    import copy

    from gancore.registry import architectures

    # params.yaml's own values, "auto" included: resolved ones are ring8's numbers, which a run
    # switched to images in the form would have passed on (batch 256 and rates 5e-4 / 1e-3)
    values = load_params(params_file).model_dump(mode="json")
    written = read_params_tree(params_file).get("train") or {}
    for key in AUTO_TRAIN["vector"]:
        values["train"][key] = written.get(key, "auto")
    data = copy.deepcopy(schema.model_dump() if hasattr(schema, "model_dump") else schema)
    definitions = data.get("definitions") or {}

    def hint(prop: dict[str, Any], value: Any) -> None:
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        prop["examples"] = [value]
        prop["description"] = f"{prop.get('description') or ''} [params.yaml: {shown}]".strip()
        if value is not None:
            # The form opens on params.yaml's value (a choice list shows it selected) instead of
            # an empty None; a run started from the form passes the values it shows.
            prop["default"] = value

    for section, model in SECTIONS.items():
        definition = definitions.get(model.__name__)
        if not definition:
            continue
        top = (data.get("properties") or {}).get(section)
        if top is not None:  # the section's own default (all None) would hide its fields' defaults
            top["default"] = {k: v for k, v in values[section].items() if v is not None}
        for name, prop in (definition.get("properties") or {}).items():
            hint(prop, values[section].get(name))
        arch = definition.get("properties", {}).get("arch") if section == "model" else None
        if arch is not None:
            choices = sorted(architectures())
            for branch in arch.get("anyOf", [arch]):
                if branch.get("type") == "string":
                    branch["enum"] = choices
    for name in SCALARS:
        if name in (data.get("properties") or {}):
            hint(data["properties"][name], values[name])
    return type(schema).model_validate(data) if hasattr(schema, "model_dump") else data
