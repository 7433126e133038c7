"""The JSON Schema of run specs, for editors (`zae schema`).

Each add-on entry (`- {name: X, ...}`) is described by add-on X's own Config schema — exactly what
`X.Config.model_json_schema()` says, enums, bounds and defaults included — so the editor and `zae validate`
agree on every option.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from zae_engine.spec.models import RunSpec

REF = "#/$defs/{model}"


def spec_json_schema(addon_configs: dict[str, type[BaseModel]] | None = None) -> dict[str, Any]:
    """The run spec's schema; with `addon_configs` (name -> Config), each add-on entry gets that Config's keys."""
    schema = RunSpec.model_json_schema(ref_template=REF)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "zae-engine run spec"
    defs = schema["$defs"]
    rules = []
    for name, config in sorted((addon_configs or {}).items()):
        own = config.model_json_schema(ref_template=REF)
        for key, definition in own.pop("$defs", {}).items():
            defs.setdefault(key, definition)
        entry = f"addon.{name}"
        defs[entry] = {
            "type": "object",
            "title": f"add-on '{name}'",
            "description": own.get("description", ""),
            "properties": {"name": {"const": name}, **own.get("properties", {})},
            "required": ["name", *own.get("required", [])],
            "additionalProperties": False,
        }
        rules.append(
            {
                "if": {"properties": {"name": {"const": name}}, "required": ["name"]},
                "then": {"$ref": f"#/$defs/{entry}"},
            }
        )
    if rules:
        defs["AddOnEntry"]["properties"]["name"]["examples"] = sorted(addon_configs)
        defs["AddOnEntry"]["allOf"] = rules
    return schema


def schema_text(addon_configs: dict[str, type[BaseModel]] | None = None) -> str:
    return json.dumps(spec_json_schema(addon_configs), indent=2)
