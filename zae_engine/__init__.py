"""zae-engine: a small PyTorch training engine composed from add-ons.

Importing this package is cheap on purpose (no torch): the `zae` CLI starts from here.
"""

from zae_engine._version import __version__

__all__ = ["__version__"]
