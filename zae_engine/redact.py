"""Secrets never leave in a record: values of keys that look like credentials become '***'.

Used for everything that writes a run's settings somewhere a person or a service reads (run records, trackers).
"""

from __future__ import annotations

import re
from typing import Any

_SECRET = re.compile(r"(^|_)(api_?key|apikey|key|api_?token|token|secret|password|passwd)$")


def masked(value: Any) -> Any:
    """`value` with the values of secret-looking keys (api_key, api_token, password, ...) replaced by '***'."""
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and v and _SECRET.search(k.lower()) else masked(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value
