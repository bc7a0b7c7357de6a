"""JSON Schema documents (draft 2020-12) for every ``--format json`` output, shipped with the package.

Every JSON output of godprof is an object whose ``schema`` key names its contract (``godprof.compare/2``);
``schema_for`` maps that name to its document here. The documents pin the keys scripts rely on (names,
types, integer counts and bytes) and allow additional keys, so adding a figure does not break a reader;
renaming or removing one bumps the version. Validate with any JSON Schema library, e.g.
``jsonschema.validate(doc, schema_for(doc["schema"]))`` (jsonschema is not a godprof dependency).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# contract name (the ``schema`` key of an output) -> file in this package
SCHEMA_FILES = {
    "godprof.estimate/1": "estimate.json",
    "godprof.estimates/1": "estimates.json",
    "godprof.compare/2": "compare.json",
    "godprof.sweep/2": "sweep.json",
    "godprof.gpus/1": "gpus.json",
    "godprof.specs/1": "specs.json",
    "godprof.validate/1": "validate.json",
    "godprof.plan.serve/2": "plan.serve.json",
    "godprof.plan.train/2": "plan.train.json",
    "godprof.plan.swarm/2": "plan.swarm.json",
    "godprof.measure/2": "measure.json",
}


@cache
def schema_for(name: str) -> dict[str, Any]:
    """The JSON Schema of the output whose ``schema`` key is ``name`` (KeyError for an unknown name)."""
    text = resources.files("godprof.schemas").joinpath(SCHEMA_FILES[name]).read_text(encoding="utf-8")
    return json.loads(text)
