"""PLACEHOLDER — the Typer app lands with issue 5."""


def main() -> None:
    raise SystemExit("zae CLI not built yet")
