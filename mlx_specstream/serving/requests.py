# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The server's requests: OpenAI-style errors and the validation of request bodies.

Every problem with a request is an ``APIError`` that the server answers as OpenAI
does, ``{"error": {"message", "type", "param", "code"}}``, with the status that fits;
a field the server cannot honour is refused in so many words rather than ignored.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from ..prompts import apply_chat_template, encode_prompt

# Roles a chat message may have, and the role the chat template sees.
ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
MAX_STOPS = 4


class APIError(Exception):
    """An error answered as OpenAI does: ``{"error": {message, type, param, code}}``."""

    TYPES = {401: "authentication_error", 404: "not_found_error", 503: "server_error"}

    def __init__(
        self,
        status: int,
        message: str,
        param: Optional[str] = None,
        code: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status >= 500:
            return "server_error"
        return self.TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(message: str, param: Optional[str] = None, code: str = "invalid_value"):
    return APIError(400, message, param, code)


# ----------------------------------------------------------------------- validation


def _opt_bool(body: dict, name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{name}' must be a boolean, got {v!r}", name, "invalid_type")
    return v


def _opt_int(body: dict, name: str, default: Optional[int], lo: Optional[int] = None):
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(f"'{name}' must be an integer, got {v!r}", name, "invalid_type")
    if isinstance(v, float) and not v.is_integer():
        raise bad(f"'{name}' must be an integer, got {v!r}", name, "invalid_type")
    v = int(v)
    if lo is not None and v < lo:
        raise bad(f"'{name}' must be >= {lo}, got {v}", name)
    return v


def _opt_float(
    body: dict,
    name: str,
    default: Optional[float],
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    lo_open: bool = False,
):
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise bad(f"'{name}' must be a number, got {v!r}", name, "invalid_type")
    v = float(v)
    if not math.isfinite(v):
        raise bad(f"'{name}' must be a finite number, got {v}", name)
    below = lo is not None and (v < lo or (lo_open and v == lo))
    if below or (hi is not None and v > hi):
        left = "(" if lo_open else "["
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise bad(f"'{name}' must be in {rng}, got {v}", name)
    return v


def _stops(body: dict) -> List[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise bad(
            "'stop' must be a string or a list of strings", "stop", "invalid_type"
        )
    if len(v) > MAX_STOPS:
        raise bad(f"'stop' takes at most {MAX_STOPS} strings, got {len(v)}", "stop")
    if any(s == "" for s in v):
        raise bad("'stop' strings must not be empty", "stop")
    return v


# Fields the server cannot honour, and the values that mean "not asked for".
UNSUPPORTED = {
    "tools": (None, []),
    "functions": (None, []),
    "logit_bias": (None, {}),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None,),
}


def _unsupported(body: dict) -> None:
    """A clear error for what cannot be honoured, instead of a silently wrong answer."""
    for name in ("n", "best_of"):
        if _opt_int(body, name, 1) != 1:
            raise bad(f"only {name}=1 is supported", name, "unsupported_value")
    for name, off in UNSUPPORTED.items():
        v = body.get(name)
        if not any(v is o or (type(v) is type(o) and v == o) for o in off):
            raise bad(
                f"'{name}' is not supported by this server",
                name,
                "unsupported_parameter",
            )
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad(
            "only response_format {'type': 'text'} is supported",
            "response_format",
            "unsupported_value",
        )


def _message_text(m: dict, i: int) -> str:
    content = m.get("content")
    param = f"messages[{i}].content"
    if content is None:
        if m["role"] == "assistant":
            return ""
        raise bad(
            f"messages[{i}] has no 'content'", param, "missing_required_parameter"
        )
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad(
                    f"messages[{i}]: only text content parts are supported", param
                )
            if not isinstance(part.get("text"), str):
                raise bad(
                    f"messages[{i}]: a text part needs a 'text' string",
                    param,
                    "invalid_type",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise bad(
        f"messages[{i}].content must be a string or a list of parts",
        param,
        "invalid_type",
    )


def parse_messages(body: dict) -> List[Dict[str, str]]:
    messages = body.get("messages")
    if messages is None:
        raise bad("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise bad("'messages' must be a list of messages", "messages", "invalid_type")
    if not messages:
        raise bad("'messages' must not be empty", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(
                f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type"
            )
        role = m.get("role")
        if not isinstance(role, str):
            raise bad(
                f"messages[{i}] needs a 'role' string",
                f"messages[{i}].role",
                "invalid_type",
            )
        if role not in ROLES:
            raise bad(
                f"messages[{i}]: unknown or unsupported role {role!r} "
                f"(one of {', '.join(ROLES)})",
                f"messages[{i}].role",
            )
        out.append({"role": ROLES[role], "content": _message_text(m, i)})
    return out


def parse_prompt(body: dict, vocab_size: int):
    """A completion prompt: a string or token ids (or a list of one of those)."""
    p = body.get("prompt")
    if p is None:
        raise bad("'prompt' is required", "prompt", "missing_required_parameter")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]
    if isinstance(p, str):
        return p
    if (
        isinstance(p, list)
        and p
        and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
    ):
        outside = [t for t in p if not 0 <= t < vocab_size]
        if outside:
            raise bad(
                f"token id {outside[0]} is outside the vocabulary [0, {vocab_size})",
                "prompt",
            )
        return p
    if isinstance(p, list) and len(p) > 1:
        raise bad("one prompt per request is supported", "prompt", "unsupported_value")
    raise bad(
        "'prompt' must be a string or a list of token ids", "prompt", "invalid_type"
    )


@dataclass
class GenRequest:
    """A validated request, ready for the worker."""

    kind: str  # "chat" or "text"
    ids: List[int]
    max_tokens: int
    sampling: Dict[str, float]
    penalties: Dict[str, float]
    stop: List[str] = field(default_factory=list)
    seed: Optional[int] = None
    stream: bool = False
    include_usage: bool = False


def parse_body(raw: bytes, names: Set[str], model_id: str) -> dict:
    """The JSON object of a request; its ``model``, if given, must be one of ``names``.

    The field never loads anything: another name is 404 ``model_not_found``.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(
            400, f"could not parse the JSON body: {e}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object", code="invalid_type")
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise bad("'model' must be a string", "model", "invalid_type")
    if name and name not in names:
        raise APIError(
            404,
            f"the model {name!r} does not exist: this server serves {model_id!r}",
            "model",
            "model_not_found",
        )
    return body


def parse_request(
    body: dict, kind: str, tokenizer, context: int, vocab_size: int, defaults: dict
) -> GenRequest:
    """A validated request from a JSON body.

    Args:
        kind: "chat" (``messages``, through the chat template) or "text" (``prompt``).
        context: the model's context length (0: unknown).
        defaults: the server's ``max_tokens`` / ``temp`` / ``top_p`` / ``min_p`` /
            ``top_k`` for fields a request leaves out.
    """
    _unsupported(body)
    d = defaults
    sampling = {
        "temp": _opt_float(body, "temperature", d.get("temp", 0.0), lo=0.0),
        "top_p": _opt_float(
            body, "top_p", d.get("top_p", 1.0), lo=0.0, hi=1.0, lo_open=True
        ),
        "min_p": _opt_float(body, "min_p", d.get("min_p", 0.0), lo=0.0, hi=1.0),
        "top_k": max(0, _opt_int(body, "top_k", d.get("top_k", 0), lo=-1)),
    }  # top_k -1 means off, as in vLLM, like 0
    penalties = {}
    rp = _opt_float(body, "repetition_penalty", None, lo=0.0, lo_open=True)
    if rp is not None and rp != 1.0:
        penalties["repetition_penalty"] = rp
    for name in ("presence_penalty", "frequency_penalty"):
        v = _opt_float(body, name, None, lo=-2.0, hi=2.0)
        if v:
            penalties[name] = v
    stream = _opt_bool(body, "stream", False)
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad(
            "'stream_options' must be an object", "stream_options", "invalid_type"
        )
    include_usage = _opt_bool(opts or {}, "include_usage", False)
    seed = _opt_int(body, "seed", None)
    stops = _stops(body)
    mt_name = "max_tokens"
    if body.get("max_completion_tokens") is not None:
        mt_name = "max_completion_tokens"  # the newer name wins when both are given
    max_tokens = _opt_int(body, mt_name, None, lo=1)

    ids, param = _prompt_ids(body, kind, tokenizer, vocab_size)
    if context and len(ids) >= context:
        raise APIError(
            400,
            f"the prompt has {len(ids)} tokens; the model's context is {context} "
            "tokens and the answer needs at least one",
            param,
            "context_length_exceeded",
        )
    if max_tokens is None:  # the server's default, within what the context leaves
        max_tokens = int(defaults.get("max_tokens", 512))
        if context:
            max_tokens = min(max_tokens, context - len(ids))
    elif context and len(ids) + max_tokens > context:
        raise APIError(
            400,
            f"prompt ({len(ids)} tokens) + {mt_name} ({max_tokens}) exceeds the "
            f"model's context of {context} tokens",
            mt_name,
            "context_length_exceeded",
        )
    return GenRequest(
        kind,
        ids,
        max_tokens,
        sampling,
        penalties,
        stops,
        None if seed is None else seed % 2**64,
        stream,
        include_usage,
    )


def _prompt_ids(body: dict, kind: str, tokenizer, vocab_size: int):
    """Token ids of the request's prompt, and the field they came from."""
    if kind == "chat":
        messages = parse_messages(body)
        if not getattr(tokenizer, "chat_template", None):
            raise bad(
                "the model's tokenizer has no chat template: use /v1/completions",
                "messages",
            )
        try:
            text = apply_chat_template(tokenizer, messages)
        except Exception as e:  # jinja's errors (e.g. roles that must alternate)
            raise bad(f"the chat template rejected the messages: {e}", "messages")
        ids, param = encode_prompt(tokenizer, text), "messages"
    else:
        ids, param = encode_prompt(tokenizer, parse_prompt(body, vocab_size)), "prompt"
    if not ids:
        raise bad("the prompt is empty", param)
    return list(ids), param


def as_api_error(e: BaseException) -> APIError:
    """What a failed generation answers: the runtime's ValueErrors are the request's."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, ValueError):
        return APIError(400, str(e), code="invalid_value")
    return APIError(
        500, f"generation failed: {type(e).__name__}: {e}", code="internal_error"
    )
