"""The demo `zae run` trains when no spec is given: a toy classifier on synthetic data, CPU, a few seconds.

`toy.py` holds a Trainer subclass, a model and a dataset, exactly the three things a user writes;
`quickstart.yaml` is the spec that wires them together.
"""

from pathlib import Path

QUICKSTART_SPEC = Path(__file__).with_name("quickstart.yaml")

__all__ = ["QUICKSTART_SPEC"]
