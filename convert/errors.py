# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Conversion errors: one line that names the file and the problem."""

from pathlib import Path
from typing import Union


class ConvertError(ValueError):
    """Bad input to the converter; ``str(e)`` is ``"<file>: <problem>"``."""

    def __init__(self, file: Union[str, Path], problem: str):
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}")


class ConvertFileNotFoundError(ConvertError, FileNotFoundError):
    """A file or directory the converter needs does not exist."""
