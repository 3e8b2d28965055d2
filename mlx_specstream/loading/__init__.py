# Copyright © 2026 mlx-specstream authors. Apache-2.0.
