# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""SiLU, masked attention and RMSNorm in fewer, fused CPU kernels.

On the x86 CPU wheel, MLX's ``exp`` (and so ``sigmoid``, ``softmax`` and the softmax
inside ``scaled_dot_product_attention``) runs at about 20 ns per element, 40x slower than
a multiply. A plain decode step barely notices (one row), but a verify pass has T rows,
and stream rows add T * γ more, so SiLU and attention softmax came to about a third of
a 16-node pass, growing with the context. Here exp is range-reduced (Cody-Waite) to
``2^n * e^r`` with a degree-7 polynomial for ``e^r``: only multiplies, adds and a bit
shift, fused by ``mx.compile``. Its error (about 1e-7 relative) is below MLX's own exp.

``mx.fast.rms_norm`` has no CPU kernel: it runs as its eleven-op fallback, about
60 us a call for any row count, a tenth of a small model's decode step. The same
formula compiled is two kernels and bitwise equal (``rms_norm``).
"""

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import mlx.core as mx
import mlx.nn as nn

_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2^9 (Cody-Waite).
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
# Taylor coefficients of e^r, highest first; |r| <= ln(2) / 2 keeps the
# truncation error below float32 rounding.
_COEFFS = (1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0)
# Attention keys are padded to a multiple of this, so the compiled softmax sees a
# new shape every KEY_BUCKET tokens rather than every step (``view`` has no
# shapeless form, so each shape is traced once).
KEY_BUCKET = 64


def _exp(x: mx.array) -> mx.array:
    dtype = x.dtype
    x = mx.clip(x.astype(mx.float32), -87.0, 88.0)
    n = mx.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _COEFFS[0]
    for c in _COEFFS[1:]:
        p = p * r + c
    # 2^n written straight into the exponent bits.
    two_n = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    return (p * two_n).astype(dtype)


def _swiglu(gate: mx.array, up: mx.array) -> mx.array:
    return gate / (1 + _exp(-gate)) * up


def _masked_softmax(scores: mx.array, mask: mx.array) -> mx.array:
    scores = mx.where(mask, scores, -mx.inf)
    m = mx.max(scores, axis=-1, keepdims=True)
    e = mx.where(mask, _exp(scores - m), 0)
    return e / mx.sum(e, axis=-1, keepdims=True)


def _rotate(x: mx.array, cos: mx.array, sin: mx.array, traditional: bool) -> mx.array:
    if traditional:  # pairs (2i, 2i + 1)
        a, b = x[..., 0::2], x[..., 1::2]
        return mx.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(
            x.shape
        )
    a, b = mx.split(x, 2, axis=-1)
    return mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


@dataclass(frozen=True)
class DecodePath:
    """Which kernels a decoding pass uses; one choice per device.

    The CPU wheel's ``exp`` is slow and its fused attention takes no shortcut for a
    masked tree, so there the polynomial exp, this file's masked softmax and a host
    top-k measured faster. A GPU has a fast exp and fused attention with a mask, and
    a host round trip costs a device sync, so there MLX's own kernels and an on-device
    top-k are used.

    Args:
        name: "cpu" or "gpu" (the device it was chosen for, not where it runs).
        fused_attention: masked (tree and stream) attention through
            ``mx.fast.scaled_dot_product_attention`` with the bool mask.
        native_ops: MLX's ``silu`` and ``exp`` instead of the polynomial exp.
        device_topk: stream top-k with ``mx.argpartition`` on the device; only the
            (γ, k) candidates come to the host.
    """

    name: str
    fused_attention: bool
    native_ops: bool
    device_topk: bool


PATHS = {
    "cpu": DecodePath("cpu", False, False, False),
    "gpu": DecodePath("gpu", True, True, True),
}
# MLX_SPECSTREAM_DECODE_PATH=cpu|gpu overrides the device's choice (bench, tests).
PATH_ENV = "MLX_SPECSTREAM_DECODE_PATH"
_override: Optional[DecodePath] = None


def _by_name(name: str) -> DecodePath:
    if name not in PATHS:
        raise ValueError(f"decode path must be one of {sorted(PATHS)}, got {name!r}")
    return PATHS[name]


def decode_path() -> DecodePath:
    """The path for this process: the override, else the env setting, else the
    default device's (a GPU, Metal or CUDA, gets "gpu")."""
    if _override is not None:
        return _override
    env = os.environ.get(PATH_ENV)
    if env:
        return _by_name(env.lower())
    return PATHS["gpu" if mx.default_device() == mx.gpu else "cpu"]


@contextlib.contextmanager
def use_decode_path(name: Optional[str]) -> Iterator[DecodePath]:
    """Run the block with decode path ``name`` (None: the device's choice)."""
    global _override
    before = _override
    _override = None if name is None else _by_name(name)
    try:
        yield decode_path()
    finally:
        _override = before


class Compiled:
    """``mx.compile(fn)``, made on first call (not at import), where this MLX can
    compile: its CPU backend needs a C++ compiler at run time. Elsewhere ``fn`` runs
    eagerly, which still beats ``mx.exp`` by about 2x.

    Args:
        state: implicit state the function reads and updates (``mx.compile``'s
            ``inputs`` and ``outputs``), e.g. ``[mx.random.state]``.
    """

    def __init__(self, fn: Callable, state: Optional[list] = None):
        self.fn, self.impl, self.state = fn, None, state or []

    def __call__(self, *args):
        if self.impl is None:
            compiled = mx.compile(self.fn, inputs=self.state, outputs=self.state)
            try:
                out = compiled(*args)
                mx.eval(out)
                self.impl = compiled
                return out
            except Exception:  # noqa: BLE001 - whatever failed, run the ops eagerly
                self.impl = self.fn
        return self.impl(*args)

    def mode(self) -> Optional[str]:
        """ "compiled", "eager" (compiling failed) or None (not called yet)."""
        if self.impl is None:
            return None
        return "eager" if self.impl is self.fn else "compiled"


def _rms_norm(x: mx.array, weight: mx.array, eps: mx.array) -> mx.array:
    # MLX's own fallback, op for op (float32 statistics), so results are identical.
    y = x.astype(mx.float32)
    y = y * mx.rsqrt(mx.mean(mx.square(y), axis=-1, keepdims=True) + eps)
    return y.astype(mx.result_type(x, weight)) * weight


poly_exp = Compiled(_exp)  # the polynomial exp alone (its accuracy is tested)
_poly_swiglu = Compiled(_swiglu)
rotate = Compiled(_rotate)  # x (1, R, H, D), cos and sin (1, R, 1, D / 2)
masked_softmax = Compiled(_masked_softmax)
_compiled_rms_norm = Compiled(_rms_norm)


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    """``mx.fast.rms_norm``, compiled where it would run as separate ops (the CPU)."""
    if mx.default_device() != mx.cpu:
        return mx.fast.rms_norm(x, weight, eps)
    return _compiled_rms_norm(x, weight, mx.array(eps, mx.float32))


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` through ``rms_norm`` (same weights, same results)."""

    def __call__(self, x: mx.array) -> mx.array:
        return rms_norm(x, self["weight"], self.eps)


def swiglu(gate: mx.array, up: mx.array, path: Optional[DecodePath] = None) -> mx.array:
    """silu(gate) * up, the Llama MLP activation (``path``: None resolves it)."""
    if (path or decode_path()).native_ops:
        return nn.silu(gate) * up
    return _poly_swiglu(gate, up)


def attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    mask: Optional[Union[mx.array, str]],
    path: Optional[DecodePath] = None,
) -> mx.array:
    """Scaled dot-product attention with grouped K/V heads and a boolean mask.

    Args:
        q: (1, H, R, D) queries; k, v: (1, KH, P, D) with H a multiple of KH.
        mask: (R, P) bool, True where a query row may attend; None (one row) or
            "causal" (prefill from position 0) go to MLX's fused kernel, and so
            does a bool mask on the "gpu" decode path.
        path: the pass's kernels (None: resolve them here).
    """
    if not isinstance(mask, mx.array) or (path or decode_path()).fused_attention:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    B, H, R, D = q.shape
    KH, P = k.shape[1], k.shape[2]
    r = H // KH
    # (1, H, R, D) -> (1, KH, r * R, D): the query heads of one K/V head share a matmul.
    qg = (q * scale).reshape(B, KH, r * R, D)
    s = (qg @ k.swapaxes(-1, -2)).reshape(B, KH, r, R, P)
    p = masked_softmax(s, mask).astype(v.dtype)
    return (p.reshape(B, KH, r * R, P) @ v).reshape(B, H, R, D)
