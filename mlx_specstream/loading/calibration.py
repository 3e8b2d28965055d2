# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""A calibration result: the draft tree chosen for one model on one device.

``calibrate.py`` measures it; this file holds the record and its cache file, so
loading a model reads the choice without importing any of the measuring code.
Results are cached per model and device (machine, MLX device and BLAS).
"""

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx

from ..blas import active_blas
from .files import cache_root, write_text_atomically

# Bump when what is measured changes: older cached results are then re-measured.
CALIBRATION_VERSION = 4
# Other processes' runnable threads per core above which timings are not cached: a
# busy CPU inflates the tree's costs unevenly and would turn the tree off for good.
BUSY_LOAD = 0.5


@dataclass
class Calibration:
    budget: int  # best-first tree nodes, root included (1: plain decoding)
    device: str
    costs: Dict[int, float]  # c(T) with the chosen stream pass, relative to plain
    tokens_per_pass: Dict[int, float]  # E(T) with the chosen drafter
    step_seconds: float  # one plain step
    stream_pass: str = "tree"
    prompt_lookup: bool = False
    # Every measurement: costs by stream pass, tokens per pass by drafter.
    all_costs: Dict[str, Dict[int, float]] = field(default_factory=dict)
    all_tokens_per_pass: Dict[str, Dict[int, float]] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION
    # Other processes' load per CPU core while the costs were timed (see
    # ``calibrate.others_load``): above BUSY_LOAD the costs are not this device's.
    load: float = 0.0
    # Pipelined decoding's fixed tree: rank paths below the root, best first
    # (``decoding.resident.fit_paths`` on the calibration answers); None: its prior.
    pipelined_paths: Optional[List[List[int]]] = None

    @property
    def busy(self) -> bool:
        return self.load > BUSY_LOAD

    @property
    def expected_speedup(self) -> float:
        return self.tokens_per_pass[self.budget] / self.costs[self.budget]


def device_key() -> str:
    """What the timings depend on: machine, MLX device and BLAS."""
    blas = active_blas().split(" (")[0]
    machine = platform.processor() or platform.system()
    return f"{platform.machine()}|{machine}|{mx.default_device()}|{blas}"


def describe(cal: Calibration) -> str:
    """The choice in words."""
    if cal.budget == 1:
        return "plain decoding (no tree pays for itself on this device)"
    how = "streams + prompt lookup" if cal.prompt_lookup else "streams"
    return (
        f"{cal.budget}-node tree from {how}, stream pass {cal.stream_pass!r} "
        f"(expected {cal.expected_speedup:.2f}x plain)"
    )


def cache_file(model_path: Path) -> Path:
    """Where the calibration of this model on this device is kept."""
    h = hashlib.sha256(str(Path(model_path).resolve()).encode())
    for name in ("config.json", "speculative_streaming.json"):
        f = Path(model_path) / name
        if f.exists():
            h.update(f.read_bytes())
    if (Path(model_path) / "streams.safetensors").exists():
        h.update(
            str((Path(model_path) / "streams.safetensors").stat().st_mtime_ns).encode()
        )
    h.update(device_key().encode())
    return cache_root().parent / "calibration" / f"{h.hexdigest()[:16]}.json"


def load_calibration(model_path: Path) -> Optional[Calibration]:
    """The cached result for this model and device; None if absent or outdated."""
    f = cache_file(model_path)
    if not f.exists():
        return None
    try:
        d = json.loads(f.read_text())
        if d.get("version") != CALIBRATION_VERSION:
            return None
        to_int = lambda m: {int(k): v for k, v in m.items()}  # noqa: E731
        d["costs"], d["tokens_per_pass"] = to_int(d["costs"]), to_int(
            d["tokens_per_pass"]
        )
        for k in ("all_costs", "all_tokens_per_pass"):
            d[k] = {name: to_int(v) for name, v in d[k].items()}
        return Calibration(**d)
    except (ValueError, KeyError, TypeError):  # unreadable: measure again
        return None


def save_calibration(model_path: Path, cal: Calibration, force: bool = False) -> bool:
    """Cache ``cal`` unless it was measured on a busy machine (``force``: always).

    Returns:
        Whether it was written (to ``cache_file(model_path)``).
    """
    if cal.busy and not force:
        return False
    write_text_atomically(cache_file(model_path), json.dumps(asdict(cal), indent=2))
    return True
