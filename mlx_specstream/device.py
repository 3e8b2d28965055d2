# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Where and when generation runs on the device: one stream, one lock, clean threads.

``stream_generate`` may run in many threads at once, on one model or several. What
we found with MLX 0.32 (``tests/test_threads.py`` holds us to it) shapes this module:

1. The abort ("terminate called without an active exception") came from threads
   ending, not from threads evaluating together. A thread that calls an
   ``mx.compile``d function (our fused kernels, mlx.nn's activations) fills a C++
   ``thread_local`` compile cache whose entries hold Python objects. That cache is
   destroyed after Python has let go of the ending thread; releasing the objects
   takes the GIL, and if the interpreter is finalizing by then (the main thread
   returned right after ``join()``), CPython ends the thread inside that
   ``noexcept`` destructor: std::terminate, the whole process aborts. It happened
   with a lone background thread too, and never when the main thread waited a
   moment before exiting; a lock around the steps did not change it. Fix, as MLX's
   own threaded tests do: ``mx.clear_streams()`` (which empties the compile cache
   since MLX 0.32.1) on the ending thread while Python still runs it, from a
   ``threading.local`` value that CPython drops there before ``join()`` returns
   (``_ThreadExit``).
2. A lazy array belongs to the stream that built it, and a thread's default stream
   or an ``mx.new_stream`` can only be evaluated on the thread that made it ("There
   is no Stream(cpu, N) in current thread"). A generator advanced from a thread
   pool (Starlette, ``run_in_executor``) failed so, and so did a response's
   ``logprobs`` read on another thread. So every generation runs on one stream
   from ``mx.new_thread_unsafe_stream``, which any thread may use. A stream per
   generation would also leak an OS thread each: MLX never ends a stream's worker
   thread.
3. That stream is not safe to use from two threads at once, nor is what a model
   builds lazily and shares between calls (the draft head's sliced weights). So a
   process-wide re-entrant lock is held around each decoding step: building its
   graph, evaluating it, and scheduling what the step hands out (``device_steps``),
   so that a caller may read a response's ``logprobs`` later on any thread, outside
   the lock, without touching the stream. Steps of concurrent generations
   interleave; their compute is serialised, their outputs are exact.
4. The lock is never held across a yield: a caller that stops iterating, or holds
   a generator and never advances it, blocks nobody.

Device hygiene as ``mlx_lm.generate``: the wired limit on Metal while any generation
runs (mlx-lm's ``wired_limit``, entered by the first and left by the last, so that
overlapping generations do not undo each other's), and ``mx.clear_cache()`` after
the first step and every ``CLEAR_CACHE_EVERY`` tokens.
"""

import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple, TypeVar

import mlx.core as mx
from mlx_lm.generate import wired_limit

CLEAR_CACHE_EVERY = 256  # generated tokens, as mlx_lm.generate

_LOCK = threading.RLock()
_STREAMS: Dict[str, mx.Stream] = {}
_THREAD = threading.local()
_generations = 0  # running, for the wired limit they share
_wired_limit: Optional[Any] = None  # mlx-lm's context manager, while any runs
_HINT = "made on another thread"


def generation_stream() -> mx.Stream:
    """The stream all generations use on the default device (made on first use)."""
    key = str(mx.default_device())  # mx.Device hashes by identity, not value
    with _LOCK:
        stream = _STREAMS.get(key)
        if stream is None:
            # Older MLX lacks it; there a CPU stream is not bound to a thread.
            make = getattr(mx, "new_thread_unsafe_stream", mx.new_stream)
            stream = _STREAMS[key] = make(mx.default_device())
        return stream


class _ThreadExit:
    """Held in a ``threading.local``: CPython drops it on its own thread when that
    thread ends, with the GIL held and before ``join()`` returns (fact 1)."""

    def __init__(self) -> None:
        self.ident = threading.get_ident()

    def __del__(self) -> None:
        clear = getattr(mx, "clear_streams", None)  # also empties the compile cache
        if clear is not None and threading.get_ident() == self.ident:
            try:
                clear()
            except Exception:  # noqa: BLE001 - never raise from a finalizer
                pass


def _clean_at_thread_exit() -> None:
    # The main thread's cache goes at process exit, after Python: nothing to do.
    if getattr(_THREAD, "exit", None) is None and (
        threading.get_ident() != threading.main_thread().ident
    ):
        _THREAD.exit = _ThreadExit()


@contextmanager
def on_device() -> Iterator[mx.Stream]:
    """Hold the generation lock with the generation stream current: wrap every piece
    of generation that builds or evaluates arrays, and never yield inside it."""
    _clean_at_thread_exit()
    with _LOCK:
        stream = generation_stream()
        try:
            with mx.stream(stream):
                yield stream
        except RuntimeError as e:
            if "in current thread" not in str(e) or _HINT in str(e):
                raise
            raise RuntimeError(
                f"{e} An array this generation needs was {_HINT}, "
                "and MLX evaluates it only there: weights loaded lazily "
                "(load(..., lazy=True)) are the usual case. Load with lazy=False, "
                "or run mx.eval(model.parameters()) on the loading thread first."
            ) from e


class _Step(Protocol):
    tokens: List[int]
    logprobs: Optional[mx.array]  # (len(tokens), V)


S = TypeVar("S", bound=_Step)


def device_steps(
    steps: Iterator[S], cache: List[Any], clear_every: int = CLEAR_CACHE_EVERY
) -> Iterator[Tuple[S, List[Optional[mx.array]]]]:
    """``(step, its tokens' logprobs rows)`` from a decoder's steps, each advanced in
    ``on_device()`` and handed out after it (the lock is never held across a yield).

    The rows and the cache's K/V are scheduled before the lock is let go: a caller
    reading them later, on any thread, only waits for them and never touches the
    generation stream (fact 3). ``mx.clear_cache()`` runs after the first step and
    every ``clear_every`` tokens, as in mlx-lm.
    """
    tokens, due = 0, 0
    try:
        while True:
            with on_device():
                step = next(steps, None)
                if step is None:
                    return
                n = len(step.tokens)
                lp = step.logprobs
                rows = [None] * n if lp is None else [lp[k] for k in range(n)]
                kv = [
                    getattr(c, name, None) for c in cache for name in ("keys", "values")
                ]
                mx.async_eval([a for a in rows + kv if isinstance(a, mx.array)])
                tokens += n
                if tokens >= due:
                    mx.clear_cache()
                    due = (tokens // clear_every + 1) * clear_every
            yield step, rows
    finally:  # closed (caller stopped, GC): the decoder's own exit under the lock too
        with on_device():
            steps.close()


@contextmanager
def generating(model: Any) -> Iterator[None]:
    """Around a whole generation: mlx-lm's wired limit (a no-op off Metal), entered
    by the first of overlapping generations and left by the last. Safe to leave from
    another thread (a generator that GC closes)."""
    global _wired_limit, _generations
    with _LOCK:
        if _generations == 0:
            _wired_limit = wired_limit(model, [generation_stream()])
            _wired_limit.__enter__()
        _generations += 1
    try:
        yield
    finally:
        with _LOCK:
            _generations -= 1
            if _generations == 0 and _wired_limit is not None:
                limit, _wired_limit = _wired_limit, None
                limit.__exit__(None, None, None)
