"""Scripted, deterministic agent turns for the offline agent stack (LiteLLM custom provider).

Loaded by the LiteLLM proxy through `litellm_settings.custom_provider_map` in the config that
`scripts/offline-stack.sh up` writes (the proxy imports this file from beside its config.yaml):

    custom_provider_map:
      - {provider: scripted, custom_handler: scripted_provider.handler}
    model_list:
      - {model_name: scripted, litellm_params: {model: scripted/agent}}

The reply depends only on the request, so tests can rely on it:

* last message is a tool result      -> text "Ran it. Output: <first line of the tool output>"
* last user message has "run: <cmd>"  -> a `bash` tool call {"command": cmd, "description": ...}
  (only when the request offers tools; finish_reason "tool_calls")
* last user message has "ask: <question>? <option> | <option> ..." -> a `question` tool call
  asking that question with those options (when the request offers the `question` tool)
* last user message has "markdown:"   -> a short report in markdown (a heading, a list with
  emphasis and inline code, a code block, a table), as agents write them
* a session-title request (opencode's small_model call) -> a short fixed title
* anything else                       -> text "Scripted reply to: <first 60 chars of the prompt>"

Set SCRIPTED_PROVIDER_LOG=/some/file in the proxy's environment to get one JSON line per request
(message roles, offered tools, the chosen turn).

Streaming (what opencode always uses) yields LiteLLM GenericStreamingChunk dicts; the proxy turns
them into OpenAI `chat.completion.chunk` SSE lines. A tool call goes out as one delta carrying
index, id, type, function.name and the complete function.arguments, which is what
`@ai-sdk/openai-compatible` accepts; then an empty chunk with finish_reason "tool_calls".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from litellm import CustomLLM
from litellm.types.utils import GenericStreamingChunk, ModelResponse

RUN_RE = re.compile(r"run:\s*(.+)", re.IGNORECASE)
ASK_RE = re.compile(r"ask:\s*([^?]+\?)\s*(.*)", re.IGNORECASE)
MARKDOWN_RE = re.compile(r"\bmarkdown:", re.IGNORECASE)
MARKDOWN_REPLY = (
    "# Build report\n\n"
    "The build **passes** now. What I changed:\n\n"
    "- removed the unused import in `src/lib.rs`\n"
    "- pinned the *toolchain*\n\n"
    "```rust\n"
    "fn main() { let answer = 42; }\n"
    "```\n\n"
    "| check | result |\n"
    "|---|---|\n"
    "| unit | ok |\n"
    "| lint | ok |\n"
)
TITLE_HINTS = ("title generator", "generate a title", "conversation title", "thread title")


def _text_of(content: Any) -> str:
    """The plain text of an OpenAI message `content` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif isinstance(part.get("content"), (str, list)):
                    out.append(_text_of(part["content"]))
            elif isinstance(part, str):
                out.append(part)
        return "\n".join(out)
    return str(content)


def _is_title_request(messages: list) -> bool:
    for m in messages:
        if m.get("role") == "system":
            text = _text_of(m.get("content")).lower()
            if any(h in text for h in TITLE_HINTS):
                return True
    return False


def _last_user_text(messages: list) -> str:
    """What the user said last: the last text part of the last user message (a provider may
    merge consecutive user messages, such as a replayed history and the next prompt, into one
    message of several parts; the prompt is the last of them)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                texts = [_text_of([p]) for p in content if _text_of([p]).strip()]
                return texts[-1] if texts else ""
            return _text_of(content)
    return ""


def _call_id(messages: list, command: str) -> str:
    """A deterministic tool-call id, unique per conversation position."""
    digest = hashlib.sha1(f"{len(messages)}:{command}".encode()).hexdigest()[:24]
    return f"call_{digest}"


def plan(messages: list, optional_params: dict | None) -> dict:
    """Decide the turn: {"text": str} or {"tool": {"id", "name", "arguments"}}."""
    optional_params = optional_params or {}
    messages = [m if isinstance(m, dict) else dict(m) for m in (messages or [])]
    last = messages[-1] if messages else {}

    if last.get("role") == "tool":
        output = _text_of(last.get("content")).strip()
        first = output.splitlines()[0] if output else ""
        return {"text": f"Ran it. Output: {first}"}

    if _is_title_request(messages):
        return {"text": "Scripted session"}

    prompt = _last_user_text(messages)
    match = RUN_RE.search(prompt)
    if match and optional_params.get("tools"):
        command = match.group(1).strip().splitlines()[0].strip()
        arguments = json.dumps({"command": command, "description": f"Run {command[:40]}"})
        return {"tool": {"id": _call_id(messages, command), "name": "bash", "arguments": arguments}}

    if MARKDOWN_RE.search(prompt):
        return {"text": MARKDOWN_REPLY}

    match = ASK_RE.search(prompt)
    offered = [t.get("function", {}).get("name") for t in optional_params.get("tools") or []]
    if match and "question" in offered:
        question = match.group(1).strip()
        labels = [o.strip() for o in match.group(2).splitlines()[0].split("|") if o.strip()] if match.group(2).strip() else []
        options = [{"label": label, "description": f"Answer {label}"} for label in labels or ["yes", "no"]]
        arguments = json.dumps({"questions": [{"question": question, "header": "Question", "options": options}]})
        return {"tool": {"id": _call_id(messages, question), "name": "question", "arguments": arguments}}

    flat = " ".join(prompt.split())
    return {"text": f"Scripted reply to: {flat[:60]}"}


def _decide(messages: list, optional_params: dict | None, stream: bool) -> dict:
    turn = plan(messages, optional_params)
    trace = os.environ.get("SCRIPTED_PROVIDER_LOG")
    if trace:  # one JSON line per request, for debugging what the harness sent
        try:
            record = {
                "time": time.time(),
                "stream": stream,
                "roles": [m.get("role") if isinstance(m, dict) else None for m in messages or []],
                "tools": [t.get("function", {}).get("name") for t in (optional_params or {}).get("tools") or []],
                "turn": turn,
            }
            with open(trace, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except Exception:  # tracing must never break a turn
            pass
    return turn


def _usage(text: str) -> dict:
    completion = max(1, len(text) // 4)
    return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}


def _chunks(turn: dict) -> Iterator[GenericStreamingChunk]:
    if "tool" in turn:
        tool = turn["tool"]
        yield {
            "text": "",
            "tool_use": {
                "index": 0,
                "id": tool["id"],
                "type": "function",
                "function": {"name": tool["name"], "arguments": tool["arguments"]},
            },
            "is_finished": False,
            "finish_reason": "",
            "usage": None,
            "index": 0,
        }
        yield {
            "text": "",
            "tool_use": None,
            "is_finished": True,
            "finish_reason": "tool_calls",
            "usage": _usage(tool["arguments"]),
            "index": 0,
        }
        return
    text = turn["text"]
    # A few pieces, so clients see real deltas.
    words = re.findall(r"\S+\s*", text) or [text]
    step = max(1, len(words) // 3)
    for i in range(0, len(words), step):
        yield {
            "text": "".join(words[i : i + step]),
            "tool_use": None,
            "is_finished": False,
            "finish_reason": "",
            "usage": None,
            "index": 0,
        }
    yield {
        "text": "",
        "tool_use": None,
        "is_finished": True,
        "finish_reason": "stop",
        "usage": _usage(text),
        "index": 0,
    }


def _response(model: str, turn: dict) -> ModelResponse:
    if "tool" in turn:
        tool = turn["tool"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": tool["id"],
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": tool["arguments"]},
                }
            ],
        }
        finish, usage = "tool_calls", _usage(tool["arguments"])
    else:
        message = {"role": "assistant", "content": turn["text"]}
        finish, usage = "stop", _usage(turn["text"])
    return ModelResponse(
        model=model,
        created=int(time.time()),
        choices=[{"index": 0, "message": message, "finish_reason": finish}],
        usage=usage,
    )


class ScriptedLLM(CustomLLM):
    def completion(self, model, messages, *args, **kwargs) -> ModelResponse:
        turn = _decide(messages, kwargs.get("optional_params"), stream=False)
        return _response(model, turn)

    async def acompletion(self, model, messages, *args, **kwargs) -> ModelResponse:
        return self.completion(model, messages, *args, **kwargs)

    def streaming(self, model, messages, *args, **kwargs) -> Iterator[GenericStreamingChunk]:
        yield from _chunks(_decide(messages, kwargs.get("optional_params"), stream=True))

    async def astreaming(self, model, messages, *args, **kwargs) -> AsyncIterator[GenericStreamingChunk]:
        for chunk in _chunks(_decide(messages, kwargs.get("optional_params"), stream=True)):
            yield chunk


handler = ScriptedLLM()
