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
from typing import Any, Callable, Dict, List, Optional

import mlx.core as mx

from ..device import on_device
from ..generate import peak_memory_gb, stream_generate
from ..models.cache import PromptCache, make_prompt_cache
from ..models.twin import mlx_lm_twin
from ..sample_utils import SamplingArgs, make_logits_processors
from ..decoding.batch import BatchDecoder
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
        self._taken: "set[Job]" = set()  # jobs ``take`` handed out, not released
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

    @property
    def running(self) -> int:
        with self._cv:
            return len(self._taken) + (self.current is not None)

    def take(self) -> Optional[Job]:
        """The next waiting job, for the running one to decode beside it (None:
        none waits); whoever takes it calls ``release`` when it ends."""
        with self._cv:
            if self._stop or not self._jobs:
                return None
            job = self._jobs.popleft()
            self._taken.add(job)
        job.started.set()
        return job

    def release(self, job: Job, failed: bool = False) -> None:
        """A job from ``take`` (or the running one) has ended."""
        with self._cv:
            if job not in self._taken:  # the running job: the loop counts it
                job.finished.set()
                return
            self._taken.discard(job)
            if failed:
                self.failed += 1
            else:
                self.served += 1
        job.finished.set()

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
            for job in self._taken:
                job.cancelled.set()
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


class _Run:
    """One request's decoding state: its conversation cache, the answer's tokens,
    the text sent and the figures, whether it decodes alone or in a batch."""

    def __init__(self, job: Job, cache: PromptCache, reused: int, tokenizer):
        self.job, self.req = job, job.req
        self.cache, self.reused = cache, reused
        self.tokenizer = tokenizer
        self.stops = StopMatcher(job.req.stop)
        self.answer: List[int] = []  # tokens of the answer (an ending EOS is not)
        self.sent = 0  # characters of the decoded answer handed to the stops
        self.drafted = 0
        self.passes = 0  # forward passes of finished segments (alone or batched)
        self.finish: Optional[str] = None
        self.hit = False  # a stop string ended the answer
        self.last: Any = None  # the last response of a speculative segment
        self.prompt_tps = 0.0
        self.tic = time.perf_counter()
        self.first: Optional[float] = None  # when the first token came

    @property
    def left(self) -> int:
        return self.req.max_tokens - len(self.answer)

    def add(self, token: int, eos: bool) -> None:
        """Take one generated token: its text goes through the stop strings to the
        client; a stop string ends the run."""
        self.job.tokens_seen += 1
        if self.first is None:
            self.first = time.perf_counter()
        if eos:
            return
        self.answer.append(token)
        # The whole answer decoded again (as mlx-lm's naive detokenizer): any
        # tokenizer, and no text lost when the run moves between decoders.
        text = self.tokenizer.decode(self.answer)
        if text.endswith("\ufffd"):  # a character's bytes not all there yet
            return
        new, self.sent = text[self.sent :], len(text)
        out, hit = self.stops.feed(new)
        if out:
            self.job.emit("text", out)
        if hit:
            self.finish, self.hit = "stop", True

    def flush(self) -> None:
        if self.hit:  # the stop string's text and what follows are not sent
            return
        text = self.tokenizer.decode(self.answer)
        out, hit = self.stops.feed(text[self.sent :])
        self.sent = len(text)
        rest = "" if hit else self.stops.flush()
        if out or rest:
            self.job.emit("text", out + rest)


class Engine:
    """Turns validated requests into tokens: prompt cache, sampling, stop strings.

    A request alone decodes speculatively (``stream_fn``). When others wait and the
    model's family can batch (``models/twin.py``), the running request leaves its
    speculative decoding between passes and joins them in one plain batch of up to
    ``max_batch`` sequences; the last one left goes back to speculating.
    """

    def __init__(
        self,
        model,
        tokenizer,
        decoding: Optional[dict] = None,
        store: Optional[PromptStore] = None,
        stream_fn: Callable = stream_generate,
        make_cache: Callable = make_prompt_cache,
        max_batch: int = 8,
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
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.worker: Optional["Worker"] = None  # set by ``Worker``: jobs to batch
        self._twin: Any = False  # made on first need (None: cannot batch)
        self.batches = 0  # batches run (health and tests read it)
        self._primary: Optional[Job] = None  # the job the worker gave ``run``

    @property
    def twin(self) -> Any:
        if self._twin is False:
            with on_device():  # its check runs both models
                self._twin = mlx_lm_twin(self.model) if self.max_batch > 1 else None
        return self._twin

    def _others_waiting(self) -> bool:
        return self.worker is not None and self.worker.waiting > 0

    def run(self, job: Job) -> None:
        """Run ``job`` (the worker's), and the jobs that join it in a batch."""
        self._primary = job
        runs = [self._open(job)]
        try:
            while runs:
                if len(runs) == 1 and not (self._others_waiting() and self.twin):
                    run = runs.pop()
                    if not self._alone(run):  # it finished
                        continue
                    runs = [run]  # others came: batch them all
                runs = self._batched(runs)
        except BaseException as e:
            for run in runs:
                self._fail(run.job, e)
            raise

    def _open(self, job: Job) -> _Run:
        """A run for ``job``: the longest cached prefix, the rest of the prompt
        pending in the cache record."""
        req = job.req
        ids = req.ids
        # The longest cached prefix, less at least one new token for the decoder.
        cache, reused = self.store.take(ids, len(ids) - 1)
        if cache is None:
            cache, reused = self.make_cache(self.model), 0
        cache.sync()
        cache.tokens.extend(ids[reused:])
        cache.pending += len(ids) - reused
        if req.seed is not None:
            mx.random.seed(req.seed)
        return _Run(job, cache, reused, self.tokenizer)

    def _kwargs(self, req: GenRequest) -> dict:
        kwargs = {**self.decoding, **req.sampling}
        if req.penalties:
            # The processors see the whole conversation the cache holds, so a
            # cache hit decodes as from scratch.
            kwargs["logits_processors"] = make_logits_processors(**req.penalties)
        if kwargs.get("pipelined") and req.penalties:
            # The pipelined loop takes no processors: this request speculates as usual.
            kwargs["pipelined"] = False
        return kwargs

    def _alone(self, run: _Run) -> bool:
        """Decode ``run`` speculatively until it ends (False) or others wait to
        be batched with it (True)."""
        prompt = run.cache.take_unfed()
        gen = self.stream_fn(
            self.model,
            self.tokenizer,
            prompt,
            run.left,
            prompt_cache=run.cache,
            **self._kwargs(run.req),
        )
        handover, last = False, None
        try:
            for r in gen:
                last = r
                if run.job.cancelled.is_set():
                    break
                run.drafted += bool(getattr(r, "from_draft", False))
                run.add(int(r.token), r.finish_reason == "stop")
                if r.finish_reason and not run.finish:
                    run.finish = r.finish_reason
                if run.finish:
                    break
                if self._others_waiting() and self.twin is not None:
                    handover = True
                    break
        finally:
            # Closing the generator trims drafts past the last token taken, so the
            # cache holds exactly the conversation so far; a failed request's cache
            # is dropped (this line is not reached).
            gen.close()
        if last is not None:
            run.passes += int(getattr(last, "forward_calls", 0) or 0)
            if not run.prompt_tps:
                run.prompt_tps = float(getattr(last, "prompt_tps", 0) or 0)
            run.last = last
        if handover and not run.job.cancelled.is_set():
            return True
        self._close(run)
        return False

    def _batched(self, runs: List[_Run]) -> List[_Run]:
        """Decode ``runs`` and the jobs that come, in one plain batch; returns the
        run to go on alone (the only one left, with nobody waiting) or []."""
        self.batches += 1
        eos = list(getattr(self.tokenizer, "eos_token_ids", None) or [])
        batch = BatchDecoder(self.twin, eos, self.max_batch, on_device)
        active: Dict[int, _Run] = {}

        def admit(run: _Run) -> None:
            # A run's sampler is its request's; the tree settings do not apply.
            kwargs = self._kwargs(run.req)
            sampling = {k: kwargs[k] for k in SAMPLING_KEYS if k in kwargs}
            uid = batch.add(
                run.cache,
                run.left,
                SamplingArgs(**sampling),
                kwargs.get("logits_processors"),
            )
            active[uid] = run

        try:
            for run in runs:
                admit(run)
            runs = []
            while active:
                # Waiting jobs join before the step: their prefills run together.
                while len(active) < self.max_batch and self.worker is not None:
                    job = self.worker.take()
                    if job is None:
                        break
                    try:
                        admit(self._open(job))
                    except BaseException as e:  # that request alone fails
                        self._fail(job, e)
                for uid, token, finish in batch.step():
                    run = active[uid]
                    run.passes += 1
                    if not run.job.cancelled.is_set():
                        run.add(token, finish == "stop")
                        run.finish = run.finish or finish
                for uid, run in list(active.items()):
                    if run.finish or run.job.cancelled.is_set():
                        run.cache = batch.remove(uid)
                        del active[uid]
                        self._close(run)
                if len(active) == 1 and not self._others_waiting():
                    ((uid, run),) = active.items()
                    run.cache = batch.remove(uid)
                    active.clear()
                    return [run]
            return []
        except BaseException as e:
            for run in active.values():
                self._fail(run.job, e)
            raise
        finally:
            batch.close()

    def _close(self, run: _Run) -> None:
        """The run has ended (or was cancelled): keep its cache, answer the client."""
        self.store.put(run.cache)
        job = run.job
        if not job.cancelled.is_set():
            run.flush()
            job.emit("done", (run.finish or "length", self.usage(run)))
        if self.worker is not None:
            self.worker.release(job)

    def _fail(self, job: Job, error: BaseException) -> None:
        if job is self._primary or job.finished.is_set():  # answered already
            return
        job.emit("error", error)
        if self.worker is not None:
            self.worker.release(job, failed=True)

    def usage(self, run: _Run) -> dict:
        """OpenAI's usage, with our figures in ``specstream`` (clients ignore it)."""
        req, completion = run.req, len(run.answer)
        gen_s = time.perf_counter() - (run.first or run.tic)
        ours = {
            "forward_passes": run.passes,
            "tokens_per_pass": round(completion / run.passes, 3) if run.passes else 0.0,
            "draft_tokens_accepted": run.drafted,
            "prompt_tps": round(run.prompt_tps, 3),
            "generation_tps": round(completion / gen_s, 3) if gen_s > 0 else 0.0,
            "peak_memory_gb": round(peak_memory_gb(), 3),
        }
        return {
            "prompt_tokens": len(req.ids),
            "completion_tokens": completion,
            "total_tokens": len(req.ids) + completion,
            "prompt_tokens_details": {"cached_tokens": run.reused},
            "specstream": ours,
        }
