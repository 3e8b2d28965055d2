# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""First GPU figures: install from local wheels, test, calibrate, bench, on one box.

    python benchmarks/gpu/run.py --wheels .whl --model DIR_OR_NAME --out OUT

Meant for a Linux machine with an NVIDIA GPU and no internet (see README.md here;
``stage.py`` beside this file packs what such a box needs into call-sized folders):

1. installs what ``--wheels`` holds (``mlx``, ``mlx-cuda-13``, ``mlx-lm``, the
   project's own wheel, ...) with ``pip install --no-index --target``, after joining
   any ``NAME.part-*`` pieces back into ``NAME`` (a call to such a machine may carry
   only so many bytes, and the CUDA wheel is about 90 MB); the same for the files
   of a ``--model`` folder. The CUDA wheel finds its CUDA libraries through paths
   relative to a site-packages; installed with ``--target`` it needs them named,
   so the interpreter's own ``nvidia/*/lib`` folders go on ``LD_LIBRARY_PATH``;
2. says which MLX device it got, runs a matmul and a compiled kernel there, and
   names the runtime's dependencies it cannot find; without a GPU it falls back to
   the CPU and says so (that is how CI runs this script). ``--probe-only`` stops here;
3. runs the runtime's tests on that device (``-m "not slow and not torch"``), then
   ``benchmarks/overhead.py`` (host work per pass against mlx-lm, compute-free model);
4. calibrates the model on the device and runs the bench against ``mlx_lm`` on the
   same weights;
5. writes ``summary.json`` and ``summary.md`` (and each step's log) under ``--out``.

Each step has its own time limit, all of them within ``--budget`` seconds (8 minutes
by default); a step that fails or runs out of time is recorded, and the rest still run.
"""

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
BENCH_METHODS = [
    "mlx_lm",
    "ours_plain",
    "ss_calibrated",
    "ss_best_first",
    "ss_best_first_accepted_pass",
    "ss_plus_lookup",
    "ss_plus_lookup_accepted_pass",
    "ss_plus_lookup_likely_pass",
    "prompt_lookup",
]


def join_parts(folder: Path) -> List[str]:
    """Join ``NAME.part-*`` files (from ``split``) into ``NAME``, in name order."""
    joined = []
    names = sorted({p.name.rsplit(".part-", 1)[0] for p in folder.glob("*.part-*")})
    for name in names:
        target = folder / name
        if target.exists():
            continue
        parts = sorted(folder.glob(f"{name}.part-*"))
        tmp = target.with_name(f".{name}.tmp")
        with open(tmp, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        os.replace(tmp, target)
        joined.append(f"{name} ({len(parts)} parts)")
    return joined


def run_step(
    name: str,
    cmd: List[str],
    out: Path,
    timeout: float,
    env: Dict[str, str],
    cwd: Optional[Path] = None,
) -> Dict:
    """Run one step, its output to ``out/<name>.log``; never raises."""
    log = out / f"{name}.log"
    tic = time.perf_counter()
    try:
        with open(log, "w") as f:
            r = subprocess.run(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                cwd=cwd,
            )
        status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - tic
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"[{name}] {status} in {seconds:.0f} s", file=sys.stderr)
    return {
        "status": status,
        "seconds": round(seconds, 1),
        "log": log.name,
        "tail": tail,
    }


def install(wheels: Path, target: Path, out: Path, env: Dict[str, str]) -> Dict:
    """``pip install --no-index`` every wheel in ``wheels`` into ``target``.

    A second run over the same wheels (a probe call, then the full run) keeps what
    the first installed: ``target/installed.json`` names the wheels and their sizes.
    """
    joined = join_parts(wheels)
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return {"status": "skipped (no wheels)", "joined": joined}
    names = {f.name: f.stat().st_size for f in files}
    marker = target / "installed.json"
    if marker.is_file() and json.loads(marker.read_text()) == names:
        return {
            "status": "ok (already installed)",
            "joined": joined,
            "wheels": list(names),
        }
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--upgrade", "--target", str(target), *map(str, files)]
    step = run_step("install", cmd, out, 240, env)
    if step["status"] == "ok":
        marker.write_text(json.dumps(names))
    step["joined"] = joined
    step["wheels"] = list(names)
    return step


def cuda_library_env(env: Dict[str, str]) -> Dict[str, str]:
    """Point a ``--target`` install of MLX's CUDA backend at this interpreter's CUDA.

    ``libmlx.so`` looks for cuBLAS, cuDNN, NVRTC, ... at ``$ORIGIN/../../nvidia/*/lib``,
    which exists only when it sits in the same site-packages as the ``nvidia-*``
    wheels (PyTorch's CUDA build brings them). NVRTC also needs CUDA's headers:
    ``CUDA_HOME``, else ``/usr/local/cuda``; a pip CUDA has them in ``nvidia/cu13``.
    """
    env = dict(env)
    spec = importlib.util.find_spec("nvidia")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    libs = sorted(str(d) for root in roots for d in root.glob("*/lib") if d.is_dir())
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [*libs, env.get("LD_LIBRARY_PATH")])
        )
    if not (
        env.get("CUDA_HOME") or env.get("CUDA_PATH") or Path("/usr/local/cuda").exists()
    ):
        for root in roots:
            if (root / "cu13" / "include").is_dir():
                env["CUDA_HOME"] = str(root / "cu13")
                break
    return env


# Runs in a fresh interpreter with the installed packages: which device MLX got, a
# matmul there (cuBLAS on CUDA) and a compiled elementwise kernel (NVRTC on CUDA),
# and which of the runtime's declared dependencies cannot be found.
DEVICE_PROBE = """
import json, re, time
from importlib import metadata
import mlx.core as mx
d = mx.default_device()
ok = lambda m: bool(getattr(getattr(mx, m, None), "is_available", bool)())
info = {"device": str(d), "gpu": d.type == mx.gpu, "mlx": mx.__version__,
        "mlx_from": mx.__file__,
        "metal": ok("metal"), "cuda": ok("cuda")}
try:
    a = mx.random.normal((1024, 1024))
    mx.eval(a @ a)
    tic = time.perf_counter()
    mx.eval(mx.compile(lambda x: mx.exp(x) * 2 + 1)(a @ a))
    info["smoke"] = f"ok ({(time.perf_counter() - tic) * 1e3:.1f} ms)"
except Exception as e:
    info["smoke"] = f"failed: {e}"[:500]
missing = []
try:
    for req in metadata.requires("mlx-specstream") or []:
        name, _, marker = req.partition(";")
        if "extra" in marker or ("darwin" in marker and "linux" not in marker):
            continue
        name = re.split(r"[\\[<>=!~ ]", name.strip(), maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
except metadata.PackageNotFoundError:
    missing.append("mlx-specstream")
info["missing"] = missing
print(json.dumps(info))
"""


def probe_device(env: Dict[str, str]) -> Dict:
    r = subprocess.run(
        [sys.executable, "-c", DEVICE_PROBE], capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        return {"device": "unavailable", "gpu": False, "error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def gpu_name() -> str:
    """What ``nvidia-smi`` calls the GPU (and its driver), or "" without one."""
    if not shutil.which("nvidia-smi"):
        return ""
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    r = subprocess.run(query, capture_output=True, text=True)
    return r.stdout.strip().replace("\n", "; ") if r.returncode == 0 else ""


def markdown(summary: Dict) -> str:
    device = summary["device"]
    lines = [
        "# GPU run",
        "",
        f"Machine: {summary['machine']}; MLX device: {device['device']}"
        + ("" if device["gpu"] else " (no GPU: fell back to the CPU)"),
        f"Smoke test: {device.get('smoke', '-')}; missing dependencies: "
        + (", ".join(device.get("missing", [])) or "none"),
        f"Model: {summary['model']}; total {summary['seconds']:.0f} s",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    for name, step in summary["steps"].items():
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '-')} |")
    bench = summary.get("bench")
    if bench:
        lines += ["", bench]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--wheels", default=None, help="folder of wheels (and .part-* pieces)"
    )
    p.add_argument(
        "--site", default=None, help="where the wheels go (default: OUT/site)"
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="name or folder")
    p.add_argument("--out", default="gpu-run")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--data", default=None, help="bench --data (task test splits)")
    p.add_argument("--per-task", type=int, default=1)
    p.add_argument("--chat", choices=("4", "all"), default="4", help="bench --chat")
    p.add_argument("--methods", nargs="+", default=BENCH_METHODS)
    p.add_argument(
        "--tests",
        nargs="+",
        default=[str(ROOT / "tests")],
        help="what pytest runs (default: the whole suite)",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="pytest-xdist workers (0: none)"
    )
    p.add_argument(
        "--probe-only",
        action="store_true",
        help="install and probe the device, then stop",
    )
    args = p.parse_args(argv)
    tic = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = cuda_library_env(dict(os.environ))
    steps: Dict[str, Dict] = {}

    if args.wheels:
        target = Path(args.site).resolve() if args.site else out / "site"
        steps["install"] = install(Path(args.wheels), target, out, env)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(target), env.get("PYTHONPATH")])
        )
    if Path(args.model).is_dir():
        steps["model"] = {"status": "ok", "joined": join_parts(Path(args.model))}
    device = probe_device(env)
    if not device["gpu"]:
        print(
            f"no GPU for MLX ({device['device']}): running on the CPU", file=sys.stderr
        )
    print(f"device: {json.dumps(device)}", file=sys.stderr)

    def left(share: float) -> float:
        return max(10.0, min(share, args.budget - (time.perf_counter() - tic)))

    py = sys.executable
    if not args.probe_only:
        # From --out, so the installed package is imported, not the source folder
        # (whose convert/ and train/ only exist inside the installed namespace).
        tests = [py, "-m", "pytest", "-q", "-rfE", "--maxfail=10"]
        tests += ["-p", "no:cacheprovider", "-m", "not slow and not torch"]
        if args.workers > 0 and importlib.util.find_spec("xdist"):
            tests += ["-n", str(args.workers)]
        tests += [str(Path(t).resolve()) for t in args.tests]
        steps["tests"] = run_step(
            "tests",
            tests,
            out,
            left(args.budget * 0.35),
            dict(env, PYTHONDONTWRITEBYTECODE="1"),
            cwd=out,
        )
        # Host work per pass (every stream pass and the pipelined one) against
        # mlx-lm on a compute-free model: what the device hides, or does not.
        overhead = [py, str(ROOT / "benchmarks" / "overhead.py"), "--repeats", "5"]
        overhead += ["--out", str(out / "overhead.json")]
        steps["overhead"] = run_step(
            "overhead", overhead, out, left(args.budget * 0.15), env
        )
        steps["calibrate"] = run_step(
            "calibrate",
            [py, "-m", "mlx_specstream", "calibrate", "--model", args.model],
            out,
            left(args.budget * 0.3),
            env,
        )
        bench = [py, "-m", "mlx_specstream", "bench", "--model", args.model]
        bench += ["--max-tokens", str(args.max_tokens)]
        bench += ["--per-task", str(args.per_task)]
        bench += ["--out", str(out / "bench"), "--methods", *args.methods]
        bench += ["--chat", args.chat]
        if args.data:
            bench += ["--data", args.data]
        # The bench stops starting prompts in time to write what it has.
        limit = left(args.budget)
        bench += ["--time-limit", f"{limit * 0.8:.0f}"]
        steps["bench"] = run_step("bench", bench, out, limit, env)

    table = out / "bench" / "bench.md"
    machine = f"{platform.machine()}|{platform.node()}|{platform.system()}"
    summary = {
        "machine": "|".join(filter(None, [gpu_name(), machine])),
        "device": device,
        "model": args.model,
        "steps": steps,
        "seconds": round(time.perf_counter() - tic, 1),
        "bench": table.read_text() if table.is_file() else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    print((out / "summary.md").read_text())
    failed = [n for n, s in steps.items() if not s["status"].startswith(("ok", "skip"))]
    if device.get("missing") or not str(device.get("smoke", "ok")).startswith("ok"):
        failed.append("probe")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
