# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Errors about files: one line that names the file and the problem."""

from pathlib import Path
from typing import Union


class ModelFileError(ValueError):
    """A file that cannot be used; ``str(e)`` is ``"<file>: <problem>"``."""

    def __init__(self, file: Union[str, Path], problem: str):
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}")


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A file or directory that is needed does not exist."""
