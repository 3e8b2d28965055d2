# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""config.json's ``model_type`` -> the model classes that serve it.

Every family's ``Model`` subclasses ``llama.Model`` (the Llama layout with streams);
a family file holds only what differs. Adding a family: a file in this folder, a line
here, a line in ``format.SUPPORTED_ARCHITECTURES``, and a builder in the tests'
family runner.
"""

from typing import Dict, Optional, Tuple, Type

from ..format import StreamArgs
from . import gemma3, llama, phi3

Family = Tuple[Type[llama.ModelArgs], Type[llama.Model]]

FAMILIES: Dict[str, Family] = {
    "llama": (llama.ModelArgs, llama.Model),
    "mistral": (llama.ModelArgs, llama.Model),
    "qwen2": (llama.ModelArgs, llama.Model),
    "qwen3": (llama.ModelArgs, llama.Model),
    "gemma3_text": (gemma3.ModelArgs, gemma3.Model),
    # multimodal Gemma 3: its text part (model_io.normalise_config reads text_config)
    "gemma3": (gemma3.ModelArgs, gemma3.Model),
    "phi3": (phi3.ModelArgs, phi3.Model),
}


def family(model_type: str) -> Family:
    """(ModelArgs, Model) classes for ``model_type``; KeyError if not served."""
    return FAMILIES[model_type]


def build_model(config: Dict, stream_args: Optional[StreamArgs] = None) -> llama.Model:
    """A model for ``config`` (its ``model_type`` picks the family), zero streams."""
    args_class, model_class = family(config["model_type"])
    return model_class(args_class.from_dict(config), stream_args)
