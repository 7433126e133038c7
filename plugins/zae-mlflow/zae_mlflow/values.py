"""Run settings and metric names in the shapes MLflow accepts: flat string params, names it allows, its limits.

MLflow refuses a whole `log_batch` for one bad name (`acc@1`) or one value past a limit, so everything is made
to fit before it is sent: names get a '_' for each character MLflow does not allow, long param values are clipped
to MLflow's limit with a marker, and keys past 250 characters keep a readable head and a hash of the whole.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_PARAM_VALUE = 6000  # MAX_PARAM_VAL_LENGTH of MLflow 2.x and 3.x servers
_NOT_ALLOWED = re.compile(r"[^/\w.\- :]")  # MLflow's names: letters, digits, _ - . space : /
CLIPPED = "…"


def metric_key(name: str) -> str:
    """`name` as MLflow takes it: 'train/acc@1' -> 'train/acc_1'; no empty, '.' or '..' path parts."""
    cleaned = _NOT_ALLOWED.sub("_", name)
    if posixpath.normpath(cleaned) != cleaned or cleaned.startswith(("/", "..")) or cleaned == ".":
        cleaned = "/".join(part for part in cleaned.split("/") if part not in ("", ".", "..")) or "_"
    return _short_key(cleaned)


def params(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested settings as {'trainer/gradient_clip': '1.0', ...}: every leaf a string MLflow accepts."""
    out: dict[str, str] = {}
    for key, value in _leaves(config, ""):
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - len(CLIPPED)] + CLIPPED
        out[metric_key(key)] = text
    return out


def _leaves(config: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, name + "/")
        else:
            yield name, value


def _short_key(key: str) -> str:
    if len(key) <= MAX_KEY:
        return key
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"{key[: MAX_KEY - 11].rstrip('/')}-{digest}"
