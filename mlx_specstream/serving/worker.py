# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The server's worker: one thread owns the model and runs requests one at a time.

``Worker`` keeps a bounded FIFO queue of ``Job``; ``Engine`` runs a job through
``stream_generate`` with the cross-request prompt cache, stop strings and the
request's sampling, and sends its text back to the event loop that is waiting.
"""

import asyncio
import collections
import math
import threading
import time
from typing import Any, Callable, Optional

import mlx.core as mx

from ..generate import stream_generate
from ..models.cache import make_prompt_cache
from ..sample_utils import make_logits_processors
from .prompt_store import PromptStore, StopMatcher
from .requests import APIError, GenRequest

# Request fields that a request may set; the rest of the decoding settings
# (speculation, tree, stream pass, prompt lookup) are the server's.
SAMPLING_KEYS = ("temp", "top_p", "min_p", "top_k")


class Job:
    """One request in the queue; events go back to the event loop that made it."""

    def __init__(
        self, req: GenRequest, loop: Optional[asyncio.AbstractEventLoop] = None
    ):
        self.req = req
        self.loop = loop
        self.events: "asyncio.Queue" = asyncio.Queue()
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.tokens_seen = 0  # responses the worker consumed (tests read it)

    def emit(self, kind: str, payload: Any = None) -> None:
        if self.loop is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is gone: nobody listens any more
            self.cancelled.set()


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class Worker:
    """A thread that owns the model and runs jobs one at a time, first come first served.

    Args:
        run: called with each job in the worker thread.
        max_queue: jobs that may wait (besides the one running).
    """

    def __init__(self, run: Callable[[Job], None], max_queue: int = 16):
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.run, self.max_queue = run, max_queue
        self._jobs: "collections.deque[Job]" = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self.current: Optional[Job] = None
        self.served = 0
        self.failed = 0
        self._mean_s = 1.0  # moving average of a job's time, for Retry-After
        self._thread = threading.Thread(
            target=self._loop, name="mlx-specstream-worker", daemon=True
        )
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stop:
                raise RuntimeError("the worker has stopped")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(max(1, min(60, math.ceil(self._mean_s))))
            self._jobs.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job: dropped if still waiting, ended at its next token if running."""
        job.cancelled.set()
        with self._cv:
            try:
                self._jobs.remove(job)
            except ValueError:
                return
        job.finished.set()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread; waiting jobs are told the server is going away."""
        with self._cv:
            self._stop = True
            for job in self._jobs:
                job.cancelled.set()
                job.emit("error", APIError(503, "the server is shutting down"))
                job.finished.set()
            self._jobs.clear()
            if self.current is not None:
                self.current.cancelled.set()
            self._cv.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self.current = self._jobs.popleft()
            tic = time.perf_counter()
            try:
                job.started.set()
                if not job.cancelled.is_set():
                    self.run(job)
                self.served += 1
            except BaseException as e:  # one failing request never stops the worker
                self.failed += 1
                job.emit("error", e)
            finally:
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - tic)
                with self._cv:
                    self.current = None
                job.finished.set()


class Engine:
    """Turns validated requests into tokens: prompt cache, sampling, stop strings."""

    def __init__(
        self,
        model,
        tokenizer,
        decoding: Optional[dict] = None,
        store: Optional[PromptStore] = None,
        stream_fn: Callable = stream_generate,
        make_cache: Callable = make_prompt_cache,
    ):
        self.model, self.tokenizer = model, tokenizer
        decoding = dict(decoding or {})
        self.defaults = {
            k: decoding.pop(k) for k in (*SAMPLING_KEYS, "max_tokens") if k in decoding
        }
        self.decoding = decoding  # speculative, tree, stream pass, prompt lookup, ...
        self.store = store if store is not None else PromptStore()
        self.stream_fn, self.make_cache = stream_fn, make_cache
        self.context = int(getattr(model.args, "max_position_embeddings", 0) or 0)

    def run(self, job: Job) -> None:
        req = job.req
        ids = req.ids
        # The longest cached prefix, less at least one new token for the decoder.
        cache, reused = self.store.take(ids, len(ids) - 1)
        if cache is None:
            cache, reused = self.make_cache(self.model), 0
        kwargs = {**self.decoding, **req.sampling}
        if req.penalties:
            # The processors see the whole conversation the cache holds, so a
            # cache hit decodes as from scratch.
            kwargs["logits_processors"] = make_logits_processors(**req.penalties)
        if req.seed is not None:
            mx.random.seed(req.seed)
        stops = StopMatcher(req.stop)
        completion, drafted, finish, last = 0, 0, None, None
        gen = self.stream_fn(
            self.model,
            self.tokenizer,
            ids[reused:],
            req.max_tokens,
            prompt_cache=cache,
            **kwargs,
        )
        try:
            for r in gen:
                last = r
                job.tokens_seen += 1
                if job.cancelled.is_set():
                    break
                if r.finish_reason != "stop":  # "stop": the token is the EOS
                    completion += 1
                    drafted += bool(getattr(r, "from_draft", False))
                text, hit = stops.feed(r.text)
                if text:
                    job.emit("text", text)
                if hit:
                    finish = "stop"
                    break
                if r.finish_reason:
                    finish = r.finish_reason
                    break
        finally:
            # Closing the generator trims drafts past the last token taken, so the
            # cache holds exactly the conversation so far; a failed request's cache
            # is dropped (this line is not reached).
            gen.close()
        self.store.put(cache)
        if job.cancelled.is_set():
            return
        rest = stops.flush()  # empty after a stop string
        if rest:
            job.emit("text", rest)
        job.emit(
            "done",
            (finish or "length", self.usage(req, reused, completion, drafted, last)),
        )

    def usage(
        self, req: GenRequest, reused: int, completion: int, drafted: int, last
    ) -> dict:
        """OpenAI's usage, with our figures in ``specstream`` (clients ignore it)."""

        def figure(name: str) -> float:
            return float(getattr(last, name, 0) or 0)

        ours = {
            "forward_passes": int(figure("forward_calls")),
            "tokens_per_pass": round(figure("tokens_per_pass"), 3),
            "draft_tokens_accepted": drafted,
            "prompt_tps": round(figure("prompt_tps"), 3),
            "generation_tps": round(figure("generation_tps"), 3),
            "peak_memory_gb": round(figure("peak_memory"), 3),
        }
        return {
            "prompt_tokens": len(req.ids),
            "completion_tokens": completion,
            "total_tokens": len(req.ids) + completion,
            "prompt_tokens_details": {"cached_tokens": reused},
            "specstream": ours,
        }
