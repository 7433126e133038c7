"""The toy trainer, model and dataset the example specs in examples/specs/ name as `examples.toy.*`.

The code lives in `zae_engine/demo/toy.py` so that an installed `zae run` (no spec) can train the same demo;
this module gives the examples the short import path a user's own project would have.
Run the specs from the repository root, e.g. `zae run examples/specs/quickstart.yaml`.
"""

from zae_engine.demo.toy import RandomDataset, TinyNet, ToyTrainer

__all__ = ["RandomDataset", "TinyNet", "ToyTrainer"]
