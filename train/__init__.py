# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Training speculative streams in PyTorch: the reference model, the lossless and
shared-mode trainers, Medusa heads, self-distillation and the synthetic data sets."""
