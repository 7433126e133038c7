"""Run ids that sort by start time, and default names people can say out loud.

An id is the UTC start time to the second plus four random hex digits (`20261201-101530-ab12`): listing a
folder in name order is listing runs in start order, and two processes starting in the same second almost
never pick the same id. "Almost" is closed by the writer, which claims the folder with an exclusive mkdir
and draws again if it is taken.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")

_ADJECTIVES = (
    "amber brave calm crisp dusty eager fair gentle golden hazy humble icy jolly keen lively lucky "
    "mellow misty nimble noble plain proud quiet rapid rosy rustic shy silver steady sunny swift tidy"
).split()
_NOUNS = (
    "badger beacon brook canyon cedar comet crane delta ember falcon fern glacier harbor heron island "
    "lantern maple meadow otter pebble pine quartz raven river sparrow spruce summit thistle tulip willow wren"
).split()


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def default_name() -> str:
    """Two words, e.g. `misty-heron`: easier to tell apart in a table than ids that differ in their last digits."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}"
