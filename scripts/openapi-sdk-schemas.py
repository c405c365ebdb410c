#!/usr/bin/env python3
"""Writes crates/api/openapi/sdk-schemas.json: the JSON Schemas of the response models of the
official SDK (videovector 2.0.0, the version tests/sdk/requirements.txt pins), as pydantic
derives them for validation. The server's OpenAPI description (GET /api/v2/openapi.json) takes
its response component schemas from this file, so a response that matches its schema is one
the SDK accepts. Run it again after an SDK upgrade: .venv/bin/python scripts/openapi-sdk-schemas.py
"""
import inspect
import json
import pathlib

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import videovector
from videovector import _types

models = sorted(
    (m for _, m in inspect.getmembers(_types, inspect.isclass)
     if issubclass(m, BaseModel) and m is not BaseModel and m.__module__ == _types.__name__),
    key=lambda m: m.__name__,
)
_, top = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")


def readable(v):
    """`writeOnly` dropped: pydantic marks SecretStr fields so, but the SDK reads them from
    responses (a bearer download URL, a key's secret)."""
    if isinstance(v, dict):
        return {k: readable(x) for k, x in v.items() if k != "writeOnly"}
    if isinstance(v, list):
        return [readable(x) for x in v]
    return v


out = {"sdk_version": videovector.__version__, "schemas": readable(top["$defs"])}
path = pathlib.Path(__file__).resolve().parent.parent / "crates/api/openapi/sdk-schemas.json"
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"{len(out['schemas'])} schemas of videovector {out['sdk_version']} -> {path}")
