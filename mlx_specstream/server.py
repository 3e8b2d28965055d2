# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""An OpenAI-compatible HTTP server: ``mlx-specstream server --model M``.

``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /health`` and a chat page at ``GET /``. One worker thread owns the model and
decodes every request through ``stream_generate``, so an answer is exactly what the
Python API gives for the same request; requests wait in a bounded FIFO queue. The K/V
of recent prompts is kept across requests (``prompt_store.PromptStore``), so a chat
that resends its history decodes only the new turn. See docs/server.md.
"""

import argparse
import asyncio
import hmac
import json
import os
import sys
import time
import uuid
from importlib import resources
from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ._version import __version__
from .blas import ensure_openblas
from .cli_args import add_decoding_args, load_from_args
from .decoding.state import state_of
from .generate import stream_generate
from .models.cache import make_prompt_cache
from .serving.prompt_store import PromptStore
from .serving.requests import (
    APIError,
    GenRequest,
    as_api_error,
    parse_body,
    parse_request,
)
from .serving.worker import Engine, Job, QueueFull, Worker

# Paths served without the API key: the health check, and the chat page, which is
# static (it holds no data and asks for the key itself).
PUBLIC_PATHS = ("/health", "/", "/favicon.ico")


def _response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


# ------------------------------------------------------------------------------ app


async def _send_error(send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]

    await send(
        {"type": "http.response.start", "status": err.status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: Bearer auth (constant-time) and a request body limit.

    The body is read here, up to ``max_body_bytes``, and replayed to the app; later
    ``receive`` calls pass through, so the app still hears a client disconnect.
    """

    def __init__(self, app, api_key: Optional[str], max_body_bytes: int):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope["path"] not in PUBLIC_PATHS:
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            ok = scheme.lower() == b"bearer" and hmac.compare_digest(given, self.key)
            if not ok:
                return await _send_error(
                    send,
                    APIError(
                        401,
                        "missing or invalid API key: send 'Authorization: Bearer KEY'",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"},
                    ),
                )
        too_big = APIError(
            413,
            f"request body over the server's limit of {self.max_body_bytes} bytes",
            code="request_too_large",
        )
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body_bytes:
            return await _send_error(send, too_big)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _send_error(send, too_big)
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {
                    "type": "http.request",
                    "body": b"".join(chunks),
                    "more_body": False,
                }
            return await receive()

        await self.app(scope, replay, send)


class _JobStream(StreamingResponse):
    """A streaming answer that cancels its job however the response ends."""

    def __init__(self, content, worker: Worker, job: Job, **kw):
        super().__init__(content, **kw)
        self._worker, self._job = worker, job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._worker.cancel(self._job)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _request_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def _choice(
    kind: str,
    text: Optional[str],
    finish: Optional[str],
    streaming: bool = False,
    role: bool = False,
) -> dict:
    """One choice of an answer or of a streamed chunk, in OpenAI's shape."""
    if kind == "text":
        return {
            "index": 0,
            "text": text or "",
            "logprobs": None,
            "finish_reason": finish,
        }
    if not streaming:
        key, value = "message", {"role": "assistant", "content": text}
    elif role:  # a chat stream's first chunk
        key, value = "delta", {"role": "assistant", "content": ""}
    else:
        key, value = "delta", {} if text is None else {"content": text}
    return {"index": 0, key: value, "logprobs": None, "finish_reason": finish}


def create_app(
    model,
    tokenizer,
    *,
    model_id: Optional[str] = None,
    aliases: Sequence[str] = (),
    decoding: Optional[dict] = None,
    api_key: Optional[str] = None,
    max_queue: int = 16,
    max_batch: int = 8,
    max_body_bytes: int = 4 << 20,
    prompt_cache_entries: int = 8,
    prompt_cache_bytes: int = 2 << 30,
    stream_fn: Callable = stream_generate,
    make_cache: Callable = make_prompt_cache,
    keepalive_s: float = 10.0,
) -> FastAPI:
    """The server's ASGI app around a loaded model (tests use it without a socket).

    Args:
        model_id: the name ``/v1/models`` lists (default: the model directory's name).
        aliases: other names a request's ``model`` may use (the path, a registry name).
        decoding: ``stream_generate`` keyword arguments (``cli_args.load_from_args``);
            ``max_tokens``, ``temp``, ``top_p``, ``min_p``, ``top_k`` are defaults a
            request may override, the rest (speculation, tree, ...) is fixed.
        api_key: require ``Authorization: Bearer api_key`` on all but ``/health``.
        max_queue: requests that may wait behind the running one; more get 503.
        max_batch: requests decoded at once (a plain batch; 1: one at a time, each
            speculating). Families with sliding-window layers decode one at a time.
        max_body_bytes: larger request bodies get 413.
        prompt_cache_entries, prompt_cache_bytes: bounds of the cross-request cache.
        stream_fn, make_cache: the generation API (tests wrap them).
        keepalive_s: an SSE comment goes out after this long without a token.
    """
    path = state_of(model).path
    model_id = model_id or (
        os.path.basename(str(path).rstrip("/")) if path else "mlx-specstream"
    )
    names = {model_id, *aliases}
    if path:
        names |= {str(path), os.path.basename(str(path).rstrip("/"))}
    # Lazily loaded weights belong to this thread's stream: load them here, since
    # MLX cannot evaluate them from the worker thread.
    mx.eval(model.parameters())
    store = PromptStore(prompt_cache_entries, prompt_cache_bytes)
    engine = Engine(model, tokenizer, decoding, store, stream_fn, make_cache, max_batch)
    worker = Worker(engine.run, max_queue)
    engine.worker = worker  # a batch takes waiting jobs from it
    _ = engine.twin  # built now (a probe through both models), not by the first batch
    created = int(time.time())
    fingerprint = f"mlx-specstream-{__version__}"
    vocab = int(model.args.vocab_size)

    app = FastAPI(
        title="mlx-specstream",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine, app.state.worker, app.state.store = engine, worker, store
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return _response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        path = request.url.path
        known = {
            404: (f"no route {path}", "not_found"),
            405: (f"{request.method} is not allowed on {path}", "method_not_allowed"),
        }
        message, code = known.get(e.status_code, (str(e.detail), None))
        return _response(
            APIError(e.status_code, message, code=code, headers=dict(e.headers or {}))
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        return _response(APIError(422, str(e.errors()[:1]), code="invalid_request"))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        message = f"internal error: {type(e).__name__}: {e}"
        return _response(APIError(500, message, code="internal_error"))

    def model_card() -> dict:
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "mlx-specstream",
            "context_length": engine.context or None,
        }

    def submit(req: GenRequest) -> Job:
        job = Job(req, asyncio.get_running_loop())
        try:
            worker.submit(job)
        except QueueFull as e:
            raise APIError(
                503,
                f"the server is busy: {worker.max_queue} requests are already waiting; retry later",
                code="queue_full",
                headers={"Retry-After": str(e.retry_after)},
            ) from None
        return job

    async def answer(job: Job, request: Request) -> Tuple[str, str, dict]:
        parts = []
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                getter = asyncio.ensure_future(job.events.get())
                done, _ = await asyncio.wait(
                    {getter, gone}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    raise APIError(
                        499, "the client closed the request", code="client_closed"
                    )
                kind, payload = getter.result()
                if kind == "text":
                    parts.append(payload)
                elif kind == "done":
                    return "".join(parts), payload[0], payload[1]
                elif kind == "error":
                    raise as_api_error(payload)
        finally:
            gone.cancel()
            worker.cancel(job)

    def envelope(kind: str, streaming: bool, rid: str, choices: list) -> dict:
        if kind == "chat":
            obj = "chat.completion.chunk" if streaming else "chat.completion"
        else:
            obj = "text_completion"
        return {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": model_id,
            "system_fingerprint": fingerprint,
            "choices": choices,
        }

    def stream(job: Job, kind: str, include_usage: bool) -> _JobStream:
        rid = _request_id(kind)

        def chunk(choices: list) -> str:
            c = envelope(kind, True, rid, choices)
            if include_usage:
                c["usage"] = None  # as OpenAI: on every chunk, set on the last
            return _sse(c)

        async def events():
            if kind == "chat":
                yield chunk([_choice(kind, None, None, streaming=True, role=True)])
            while True:
                try:
                    what, payload = await asyncio.wait_for(
                        job.events.get(), keepalive_s
                    )
                except asyncio.TimeoutError:  # waiting in the queue, or a long prefill
                    yield ": keep-alive\n\n"  # (an SSE comment: clients skip it)
                    continue
                if what == "text":
                    yield chunk([_choice(kind, payload, None, streaming=True)])
                elif what == "done":
                    finish, usage = payload
                    yield chunk([_choice(kind, None, finish, streaming=True)])
                    if include_usage:
                        last = envelope(kind, True, rid, [])
                        last["usage"] = usage
                        yield _sse(last)
                    break
                elif what == "error":
                    yield _sse(as_api_error(payload).body())
                    break
            yield "data: [DONE]\n\n"

        return _JobStream(
            events(),
            worker,
            job,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def complete(request: Request, kind: str):
        body = parse_body(await request.body(), names, model_id)
        req = parse_request(
            body, kind, tokenizer, engine.context, vocab, engine.defaults
        )
        job = submit(req)
        if req.stream:
            return stream(job, kind, req.include_usage)
        text, finish, usage = await answer(job, request)
        out = envelope(kind, False, _request_id(kind), [_choice(kind, text, finish)])
        out["usage"] = usage
        return out

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, "text")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def retrieve_model(name: str):
        if name not in names:
            raise APIError(
                404, f"the model {name!r} does not exist", "model", "model_not_found"
            )
        return model_card()

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": model_id,
            "queue": {
                "running": worker.current is not None,
                "decoding": worker.running,
                "waiting": worker.waiting,
                "max_waiting": worker.max_queue,
            },
            "served": worker.served,
            "failed": worker.failed,
            "batches": engine.batches,
            "prompt_cache": store.stats(),
        }

    @app.get("/")
    async def page():
        return HTMLResponse(chat_page())

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    return app


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def chat_page() -> str:
    return resources.files("mlx_specstream").joinpath("chat_page.html").read_text()


# ------------------------------------------------------------------------------ CLI


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def main(argv: Optional[List[str]] = None) -> None:
    """``mlx-specstream server`` (also ``mlx_specstream.server``)."""
    parser = argparse.ArgumentParser(
        prog="mlx-specstream server",
        description="Serve a model over an OpenAI-compatible HTTP API, with a chat page at /.",
    )
    add_decoding_args(parser)
    parser.set_defaults(max_tokens=512)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MLX_SPECSTREAM_API_KEY"),
        help="require 'Authorization: Bearer KEY' on all but /health "
        "(default: $MLX_SPECSTREAM_API_KEY)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=16, help="requests that may wait; more get 503"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="requests decoded at once in a plain batch (1: one at a time)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=4 << 20,
        help="larger request bodies get 413",
    )
    parser.add_argument(
        "--prompt-cache-entries",
        type=int,
        default=8,
        help="0 turns the prompt cache off",
    )
    parser.add_argument(
        "--prompt-cache-gb",
        type=float,
        default=2.0,
        help="K/V bytes the prompt cache keeps",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
    )
    args = parser.parse_args(argv)
    if not _loopback(args.host) and not args.api_key:
        print(
            f"warning: serving on {args.host} without --api-key: anyone who reaches this "
            "address can use the model",
            file=sys.stderr,
        )
    try:
        model, tokenizer, kwargs = load_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    app = create_app(
        model,
        tokenizer,
        model_id=args.model if not os.path.isdir(args.model) else None,
        aliases=[args.model],
        decoding=kwargs,
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        max_body_bytes=args.max_request_bytes,
        prompt_cache_entries=args.prompt_cache_entries,
        prompt_cache_bytes=int(args.prompt_cache_gb * (1 << 30)),
    )
    print(
        f"mlx-specstream {__version__}: serving {args.model} on http://{args.host}:{args.port}/",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    ensure_openblas()
    main()
