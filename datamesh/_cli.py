"""The `datamesh` command's entry point, in the client's package because a client-only install
(`pip install datamesh`) has it too: the CLI needs the server extra, so say so there instead of
a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the CLI, or explain how to install it."""
    try:
        from services.cli import main as run
    except ModuleNotFoundError as missing:
        sys.exit(
            f"The datamesh command needs the server: pip install 'datamesh[server]' "
            f"({missing.name} is not installed; `pip install datamesh` is the Python client)."
        )
    run()
