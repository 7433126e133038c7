"""`python -m zae_engine.cli` (what torchrun workers run)."""

from zae_engine.cli import main

main()
