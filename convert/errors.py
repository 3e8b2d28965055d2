# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Conversion errors: the runtime's file errors under the converter's names."""

from mlx_specstream.errors import ModelFileError as ConvertError
from mlx_specstream.errors import ModelFileNotFoundError as ConvertFileNotFoundError

__all__ = ["ConvertError", "ConvertFileNotFoundError"]
