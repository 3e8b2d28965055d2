# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stage a GPU run: the wheels and a model, packed into folders one call can carry.

    python benchmarks/gpu/stage.py --model DIR --out .gpu

The device machine of this project has no network and no MLX, takes at most 64 MiB
of working tree per call (the tracked files travel each time), and goes back after
30 s idle; MLX's CUDA wheel is about 90 MB and a 4-bit model of the default size
about 80 MB. This script, on a machine with internet:

1. downloads what the box lacks (``pip download``, versions pinned to the ones
   installed here): ``mlx``, ``mlx-cuda-13``, ``mlx-lm`` and the server and data
   packages the box's image does not hold; builds the project's own wheel;
2. recompresses the CUDA wheel with LZMA (90 -> 79 MB; pip reads it as it is);
3. packs the wheels, then the model folder, into ``OUT/1``, ``OUT/2``, ... each
   under one call's share, cutting a file that straddles two calls into
   ``NAME.part-NNN`` pieces (``run.py`` joins them back);
4. writes ``OUT/plan.json`` and ``OUT/PLAN.md``: for each call, what it carries and
   its command. The calls copy their folder to ``/tmp/stage``; the one that brings
   the last wheel also installs them and probes the GPU (so a broken install shows
   before the model is on the box); the last one runs ``run.py`` to the end.

``--backend cpu --python-version 3.11`` stages the same with MLX's CPU wheels for
this machine's Python: a rehearsal of every step but the GPU (``--rehearse``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
Piece = Tuple[Path, str, int, int]  # source file, name in the stage, offset, length
MIB = 1 << 20
CALL_LIMIT = 64 * MIB
# What the runtime and its tests import and the GPU box's image (the device tool's
# KINDS.md, 2026-11-17) does not hold; everything else they need is there.
BOX_LACKS = [
    "mlx",
    "mlx-lm",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "uvicorn",
    "gguf",
    "sqlglot",
]
SITE = "/tmp/site"  # where the box's calls install the wheels
BACKEND = {"cuda": "mlx-cuda-13", "cpu": "mlx-cpu"}
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64"]
PLATFORMS += ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# The box's tests: the decode paths, the lossless invariant across drafters, trees,
# caches and model families, and the runtime's own pieces; the rest (converters,
# data, server, bench plumbing) does not touch the GPU.
GPU_TESTS = [
    "tests/test_decode_path.py",
    "tests/test_draft_vocab.py",
    "tests/test_generate.py",
    "tests/test_tree.py",
    "tests/test_cache.py",
    "tests/test_fast_ops.py",
    "tests/test_models.py",
    "tests/test_medusa.py",
    "tests/test_ngrams.py",
    "tests/test_sampling.py",
    "tests/test_calibrate.py",
    "tests/test_precision.py",
    "tests/test_lowprec.py",
    "tests/test_mlx_lm_compat.py",
    "tests/test_gemma3.py",
    "tests/test_phi3.py",
]


def download(
    names: Sequence[str], dest: Path, python_version: str, backend: str
) -> List[Path]:
    """``pip download`` each package at the version installed here, no dependencies."""
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    pins.append(f"{BACKEND[backend]}=={metadata.version('mlx')}")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    cmd += ["--only-binary=:all:", "--implementation", "cp"]
    cmd += ["--python-version", python_version, "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + pins, check=True)
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
    subprocess.run(
        wheel + ["--no-build-isolation", "-w", str(dest), str(ROOT)], check=True
    )
    return sorted(dest.glob("*.whl"))


def recompress(wheel: Path) -> None:
    """Rewrite a wheel with LZMA members: same files, same RECORD, fewer bytes."""
    tmp = wheel.with_name(f".{wheel.name}.tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_LZMA)
    tmp.replace(wheel)


def tree_bytes() -> int:
    """Bytes of the working tree that travels with every call (tracked + untracked)."""
    r = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    paths = [ROOT / p for p in r.stdout.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def pack(files: Sequence[Tuple[Path, str]], cap: int) -> List[List[Piece]]:
    """Cut ``files`` (source, name in the stage) into calls of at most ``cap`` bytes.

    In order, filling each call before the next; a file that does not fit in what
    is left of a call goes in pieces ``NAME.part-000``, ``-001``, ... (zero-padded, so
    name order is byte order). Returns the pieces of each call.
    """
    calls: List[List[Piece]] = [[]]
    room = cap
    for src, name in files:
        size = src.stat().st_size
        if size <= room:
            calls[-1].append((src, name, 0, size))
            room -= size
            continue
        offset, part = 0, 0
        while offset < size:
            if room == 0:
                calls.append([])
                room = cap
            n = min(size - offset, room)
            calls[-1].append((src, f"{name}.part-{part:03d}", offset, n))
            offset, room, part = offset + n, room - n, part + 1
    return calls


def write_calls(calls: Sequence[Sequence[Piece]], out: Path) -> None:
    """Write each call's pieces under ``out/<call number>/``."""
    for i, call in enumerate(calls, 1):
        for src, name, offset, length in call:
            dst = out / str(i) / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as f, open(dst, "wb") as g:
                f.seek(offset)
                g.write(f.read(length))


def plan(
    calls: Sequence[Sequence[Piece]],
    out: Path,
    stage: str,
    budget: int,
    workers: int,
    extra: str,
) -> List[Dict]:
    """The command of each call: copy its folder into ``stage``; probe; run."""
    rel = out.resolve().relative_to(ROOT)
    last_wheel = max(
        i
        for i, c in enumerate(calls)
        if any(n.startswith("wheels/") for _, n, _, _ in c)
    )
    run = f"python3 benchmarks/gpu/run.py --wheels {stage}/wheels --site {SITE}"
    steps = []
    for i, call in enumerate(calls):
        cmd = f"mkdir -p {stage} && cp -r {rel}/{i + 1}/. {stage}/ && du -sh {stage}"
        if i == len(calls) - 1:
            cmd += (
                f" && PYTHONUNBUFFERED=1 {run} --model {stage}/model --out $OUT/gpu-run"
                f" --budget {budget} --workers {workers} --tests {' '.join(GPU_TESTS)}"
                f"{' ' + extra if extra else ''}"
                "; rc=$?; rm -f $OUT/gpu-run/bench/bench.png; exit $rc"
            )
            timeout = budget + 90
        elif i == last_wheel:
            cmd += f" && {run} --out $OUT/probe --probe-only"
            timeout = 240
        else:
            timeout = 120
        size = sum(length for *_, length in call)
        steps.append(
            {
                "carry": [f"{rel}/{i + 1}"],
                "command": cmd,
                "timeout_s": timeout,
                "bytes": size,
            }
        )
    return steps


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="MLX model folder (with its streams)")
    p.add_argument("--out", default=str(ROOT / ".gpu"))
    p.add_argument("--backend", choices=sorted(BACKEND), default="cuda")
    p.add_argument("--python-version", default="3.12", help="the box's Python")
    p.add_argument("--stage", default="/tmp/stage", help="where the box collects it")
    p.add_argument("--budget", type=int, default=420, help="run.py --budget, seconds")
    p.add_argument("--workers", type=int, default=8, help="pytest-xdist workers there")
    p.add_argument(
        "--data", default=None, help="folder of {task}_test.jsonl for the bench there"
    )
    p.add_argument("--margin-mib", type=float, default=2.0)
    p.add_argument("--run-args", default="", help="more options for run.py's last call")
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="then make the calls here, one after another (with --backend cpu)",
    )
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    model = Path(args.model)
    if not (model / "config.json").is_file():
        sys.exit(f"error: {model} is not an MLX model folder (no config.json)")
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "download"
    wheels.mkdir(parents=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=ROOT)
    if ignored.returncode != 0:  # else it would travel with every call
        sys.exit(f"error: {out} is not ignored by git (add /{out.name}/ to .gitignore)")
    found = download(BOX_LACKS, wheels, args.python_version, args.backend)
    for wheel in found:
        if wheel.name.startswith("mlx_cuda"):
            recompress(wheel)
    files = sorted(found, key=lambda w: -w.stat().st_size)  # the CUDA wheel first
    items = [(w, f"wheels/{w.name}") for w in files]
    items += [(f, f"model/{f.name}") for f in sorted(model.iterdir()) if f.is_file()]
    if args.data:  # held-out prompts for the bench, small
        items += [
            (f, f"data/{f.name}") for f in sorted(Path(args.data).glob("*_test.jsonl"))
        ]

    tree = tree_bytes()
    cap = CALL_LIMIT - tree - int(args.margin_mib * MIB)
    calls = pack(items, cap)
    write_calls(calls, out)
    shutil.rmtree(wheels)
    data = f"--data {args.stage}/data --per-task 3 --chat all" if args.data else ""
    extra = " ".join(filter(None, [data, args.run_args]))
    steps = plan(calls, out, args.stage, args.budget, args.workers, extra)
    (out / "plan.json").write_text(json.dumps(steps, indent=2))
    lines = [
        f"# GPU run in {len(steps)} calls, back to back (the box goes back after 30 s idle)",
        "",
        f"Working tree {tree / MIB:.1f} MiB travels with each call; each call's share "
        f"is at most {cap / MIB:.1f} MiB. Make the calls one right after another.",
        "",
    ]
    for i, step in enumerate(steps, 1):
        lines += [
            f"## Call {i}: {step['bytes'] / MIB:.1f} MiB, timeout_s {step['timeout_s']}",
            "",
            f"carry: {json.dumps(step['carry'])}",
            "",
            "```",
            step["command"],
            "```",
            "",
        ]
    (out / "PLAN.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.rehearse:
        rehearse(steps, out, args.stage)


def rehearse(steps: Sequence[Dict], out: Path, stage: str) -> None:
    """Make the planned calls on this machine, each from the repo root with its own
    ``$OUT``, as the device tool would; stop at the first that fails."""
    for path in (Path(SITE), Path(stage)):
        shutil.rmtree(path, ignore_errors=True)  # the box starts bare
    for i, step in enumerate(steps, 1):
        call_out = out / f"rehearsal-{i}"
        call_out.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OUT=str(call_out))
        print(f"[call {i}] {step['command']}", file=sys.stderr)
        r = subprocess.run(["bash", "-c", step["command"]], cwd=ROOT, env=env)
        if r.returncode != 0:
            sys.exit(f"error: call {i} exited {r.returncode}")


if __name__ == "__main__":
    main()
