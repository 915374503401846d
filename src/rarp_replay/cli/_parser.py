"""An ArgumentParser whose errors are one line, as the project's other errors are."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineErrors(argparse.ArgumentParser):
    """`prog: error: message` and exit code 2, without the usage block.

    argparse prints the whole usage (a dozen lines for rarp-reply) before the
    one line that says what is wrong; `--help` still prints everything.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
