# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""First GPU figures: install from local wheels, test, calibrate, bench, on one box.

    python benchmarks/gpu/run.py --wheels .whl --model DIR_OR_NAME --out OUT

Meant for a Linux machine with an NVIDIA GPU and no internet (see README.md here):

1. installs what ``--wheels`` holds (``mlx``, ``mlx-cuda-13``, ``mlx-lm``, the
   project's own wheel, ...) with ``pip install --no-index --target``, after joining
   any ``NAME.part-*`` pieces back into ``NAME`` (a call to such a machine may carry
   only so many bytes, and the CUDA wheel is about 90 MB);
2. says which MLX device it got; without a GPU it falls back to the CPU and says so
   (that is how CI runs this script);
3. runs the runtime's tests on that device (``-m "not slow and not torch"``);
4. calibrates the model on the device and runs the bench against ``mlx_lm`` on the
   same weights;
5. writes ``summary.json`` and ``summary.md`` (and each step's log) under ``--out``.

Each step has its own time limit, all of them within ``--budget`` seconds (8 minutes
by default); a step that fails or runs out of time is recorded, and the rest still run.
"""

import argparse
import json
import os
import platform
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
    return {"status": status, "seconds": round(seconds, 1), "log": log.name, "tail": tail}


def install(wheels: Path, target: Path, out: Path, env: Dict[str, str]) -> Dict:
    """``pip install --no-index`` every wheel in ``wheels`` into ``target``."""
    joined = join_parts(wheels)
    files = sorted(str(w) for w in wheels.glob("*.whl"))
    if not files:
        return {"status": "skipped (no wheels)", "joined": joined}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    cmd += ["--upgrade", "--target", str(target), *files]
    step = run_step("install", cmd, out, 240, env)
    step["joined"] = joined
    step["wheels"] = [Path(f).name for f in files]
    return step


DEVICE_PROBE = (
    "import json, mlx.core as mx; d = mx.default_device(); "
    "ok = lambda m: bool(getattr(getattr(mx, m, None), 'is_available', bool)()); "
    "print(json.dumps({'device': str(d), 'gpu': d.type == mx.gpu, "
    "'mlx': mx.__version__, 'metal': ok('metal'), 'cuda': ok('cuda')}))"
)


def probe_device(env: Dict[str, str]) -> Dict:
    r = subprocess.run(
        [sys.executable, "-c", DEVICE_PROBE], capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        return {"device": "unavailable", "gpu": False, "error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def markdown(summary: Dict) -> str:
    lines = [
        "# GPU run",
        "",
        f"Machine: {summary['machine']}; MLX device: {summary['device']['device']}"
        + ("" if summary["device"]["gpu"] else " (no GPU: fell back to the CPU)"),
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
    p.add_argument("--wheels", default=None, help="folder of wheels (and .part-* pieces)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--out", default="gpu-run")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--data", default=None, help="bench --data (task test splits)")
    p.add_argument("--per-task", type=int, default=1)
    p.add_argument(
        "--tests",
        default=str(ROOT / "tests"),
        help="what pytest runs (default: the whole suite)",
    )
    args = p.parse_args(argv)
    tic = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    steps: Dict[str, Dict] = {}

    if args.wheels:
        target = out / "site"
        steps["install"] = install(Path(args.wheels), target, out, env)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(target), env.get("PYTHONPATH")])
        )
    device = probe_device(env)
    if not device["gpu"]:
        print(f"no GPU for MLX ({device['device']}): running on the CPU", file=sys.stderr)

    def left(share: float) -> float:
        return max(10.0, min(share, args.budget - (time.perf_counter() - tic)))

    py = sys.executable
    # From --out, so the installed package is imported, not the source folder
    # (whose convert/ and train/ only exist inside the installed namespace).
    tests = [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    tests += ["-m", "not slow and not torch", str(Path(args.tests).resolve())]
    steps["tests"] = run_step(
        "tests",
        tests,
        out,
        left(args.budget * 0.35),
        dict(env, PYTHONDONTWRITEBYTECODE="1"),
        cwd=out,
    )
    steps["calibrate"] = run_step(
        "calibrate",
        [py, "-m", "mlx_specstream", "calibrate", "--model", args.model],
        out,
        left(args.budget * 0.3),
        env,
    )
    bench = [py, "-m", "mlx_specstream", "bench", "--model", args.model]
    bench += ["--max-tokens", str(args.max_tokens), "--per-task", str(args.per_task)]
    bench += ["--out", str(out / "bench"), "--methods", *BENCH_METHODS]
    if args.data:
        bench += ["--data", args.data]
    steps["bench"] = run_step("bench", bench, out, left(args.budget), env)

    table = out / "bench" / "bench.md"
    summary = {
        "machine": f"{platform.machine()}|{platform.node()}|{platform.system()}",
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
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
