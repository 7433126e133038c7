"""The JSON Schema of run specs, for editors (`zae schema`)."""

from __future__ import annotations

import json
from typing import Any

from zae_engine.spec.models import RunSpec


def spec_json_schema(addon_fields: dict[str, list[Any] | None] | None = None) -> dict[str, Any]:
    """The JSON Schema editors use to check and complete spec files.

    `addon_fields` maps each installed add-on name to its Config fields (`addon_source.FieldInfo`, read from source;
    None when unreadable): every add-on entry then gets its own keys, descriptions and simple types.
    """
    schema = RunSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "zae-engine run spec"
    if addon_fields:
        entry = schema["$defs"]["AddOnEntry"]
        entry["properties"]["name"]["examples"] = sorted(addon_fields)
        entry["allOf"] = [
            _addon_rule(name, fields) for name, fields in sorted(addon_fields.items()) if fields is not None
        ]
    return schema


_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "object"}


def _addon_rule(name: str, fields: list[Any]) -> dict[str, Any]:
    """`if name is X then only X's Config keys` for one add-on."""
    properties: dict[str, Any] = {"name": {"const": name}}
    for field in fields:
        prop: dict[str, Any] = {"description": field.description} if field.description else {}
        json_type = _JSON_TYPES.get(field.type.split("[")[0].strip())
        if json_type and "|" not in field.type and "Optional" not in field.type:  # unions stay untyped
            prop["type"] = json_type
        if not field.required:
            prop["description"] = f"{prop.get('description', '')} (default: {field.default})".strip()
        properties[field.name] = prop
    required = [field.name for field in fields if field.required]
    then: dict[str, Any] = {"properties": properties, "additionalProperties": False}
    if required:
        then["required"] = required
    return {"if": {"properties": {"name": {"const": name}}, "required": ["name"]}, "then": then}


def schema_text(addon_fields: dict[str, list[Any] | None] | None = None) -> str:
    return json.dumps(spec_json_schema(addon_fields), indent=2)
