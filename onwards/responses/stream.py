"""Chat Completions SSE -> Responses SSE events, incrementally.

`SSEParser` cuts a byte stream into `data:` payloads wherever the chunk boundaries fall.
`ChatStreamTranslator` turns the chat chunks of one model call into Responses events as they
arrive (item added, part added, deltas, done) and, at the end, knows the finished output
items and the reassembled chat completion, so the stream and the final response agree on
every id. One `Sequencer` is shared by all model calls of a response, so sequence numbers
and output indexes keep counting across the steps of a tool loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from onwards.responses import convert, ids

Event = dict[str, Any]

# An event longer than this without a delimiter is not SSE from a sane backend.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEParser:
    """Bytes in, the `data` of each complete event out (multi-line data joined with "\\n")."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        if b"\r" in self._buf:
            self._buf = self._buf.replace(b"\r\n", b"\n")
        out = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            block, self._buf = self._buf[:end], self._buf[end + 2 :]
            data = _event_data(block)
            if data is not None:
                out.append(data)
        if len(self._buf) > MAX_EVENT_BYTES:
            raise ValueError("upstream SSE event exceeds the size limit")
        return out

    def close(self) -> list[str]:
        """The last event when the stream ended without its blank line."""
        block, self._buf = self._buf.rstrip(b"\r\n"), b""
        data = _event_data(block) if block else None
        return [data] if data is not None else []


def _event_data(block: bytes) -> str | None:
    lines = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None  # comments, event:/id:/retry: only
    return b"\n".join(lines).decode("utf-8", errors="replace")


def encode_event(event: Event) -> bytes:
    """One Responses SSE event, named by its type as the OpenAI API does."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass
class Sequencer:
    """Sequence numbers and output indexes of one response, across all its model calls."""

    next_sequence: int = 0
    next_output_index: int = 0

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.next_sequence, **fields}
        self.next_sequence += 1
        return event


def lifecycle_event(seq: Sequencer, kind: str, response: dict[str, Any]) -> Event:
    """`response.created`, `.in_progress`, `.completed`, `.failed`, `.incomplete`."""
    return seq.event(kind, response=response)


def error_event(seq: Sequencer, message: str, code: str | None, param: str | None = None) -> Event:
    return seq.event("error", code=code, message=message, param=param)


@dataclass
class _Open:
    """An output item being streamed."""

    kind: str  # "reasoning" | "message" | "function_call"
    item_id: str
    output_index: int
    text: list[str] = field(default_factory=list)  # reasoning / output text / arguments
    refusal: list[str] = field(default_factory=list)
    part_open: bool = False
    hidden: bool = False  # a server-side tool call: reassembled, never shown


@dataclass
class _Call:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    item: _Open | None = None


class ChatStreamTranslator:
    """Chat chunks of one model call in, Responses events out."""

    def __init__(self, seq: Sequencer, hidden_tools: Collection[str] = ()) -> None:
        self._seq = seq
        self._hidden = hidden_tools
        self._open: list[_Open] = []
        self._done: list[tuple[int, dict[str, Any]]] = []  # (output_index, item)
        self._reasoning: _Open | None = None
        self._message: _Open | None = None
        self._calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._meta: dict[str, Any] = {}
        # The whole answer, for the reassembled completion (items may split it).
        self._all_text: list[str] = []
        self._all_refusal: list[str] = []
        self._all_thinking: list[str] = []

    # -- feeding ------------------------------------------------------------------------------

    def feed_data(self, data: str) -> list[Event]:
        """One SSE `data` payload; `[DONE]` and keep-alives produce nothing."""
        if data.strip() in ("", "[DONE]"):
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []  # a backend's non-JSON noise line; the chunks around it still count
        return self.feed(chunk) if isinstance(chunk, dict) else []

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("error") is not None:
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return []
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in self._meta:
                self._meta[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has one answer; n>1 extras are not representable
            delta = choice.get("delta") or {}
            thinking = convert.reasoning_text(delta)
            if thinking:
                events += self._reasoning_delta(thinking)
            if isinstance(delta.get("content"), str) and delta["content"]:
                events += self._text_delta(delta["content"], refusal=False)
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                events += self._text_delta(delta["refusal"], refusal=True)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _open_item(self, kind: str, item_id: str, item: dict[str, Any] | None) -> _Open:
        opened = _Open(kind, item_id, -1, hidden=item is None)
        if item is not None:
            opened.output_index = self._seq.next_output_index
            self._seq.next_output_index += 1
        self._open.append(opened)
        return opened

    def _added(self, opened: _Open, item: dict[str, Any]) -> Event:
        return self._seq.event("response.output_item.added", output_index=opened.output_index, item=item)

    def _reasoning_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        self._all_thinking.append(text)
        if self._reasoning is None:
            item_id = ids.reasoning_id()
            item = {"id": item_id, "type": "reasoning", "summary": [], "status": "in_progress"}
            self._reasoning = self._open_item("reasoning", item_id, item)
            events.append(self._added(self._reasoning, item))
        r = self._reasoning
        r.text.append(text)
        events.append(
            self._seq.event(
                "response.reasoning_text.delta",
                item_id=r.item_id,
                output_index=r.output_index,
                content_index=0,
                delta=text,
            )
        )
        return events

    def _text_delta(self, text: str, refusal: bool) -> list[Event]:
        events = self._close_early(self._reasoning)
        self._reasoning = None
        (self._all_refusal if refusal else self._all_text).append(text)
        if self._message is None:
            item_id = ids.message_id()
            item = convert.message_item([], item_id, "in_progress")
            self._message = self._open_item("message", item_id, item)
            events.append(self._added(self._message, item))
        m = self._message
        if refusal:
            m.refusal.append(text)
            kind = "response.refusal.delta"
        else:
            if not m.part_open:
                m.part_open = True
                events.append(
                    self._seq.event(
                        "response.content_part.added",
                        item_id=m.item_id,
                        output_index=m.output_index,
                        content_index=0,
                        part=convert.text_part(""),
                    )
                )
            m.text.append(text)
            kind = "response.output_text.delta"
        extra: dict[str, Any] = {} if refusal else {"logprobs": []}
        index = 1 if refusal and m.part_open else 0
        events.append(
            self._seq.event(
                kind, item_id=m.item_id, output_index=m.output_index, content_index=index, delta=text, **extra
            )
        )
        return events

    def _call_delta(self, delta: dict[str, Any]) -> list[Event]:
        index = delta.get("index", 0)
        call = self._calls.setdefault(index if isinstance(index, int) else 0, _Call())
        fn = delta.get("function") or {}
        if isinstance(delta.get("id"), str) and not call.call_id:
            call.call_id = delta["id"]
        if isinstance(fn.get("name"), str):
            call.name += fn["name"]
        events: list[Event] = []
        if call.item is None and call.name:
            events += self._start_call(call)
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            call.arguments.append(args)
            item = call.item
            if item is not None and not item.hidden:
                events.append(
                    self._seq.event(
                        "response.function_call_arguments.delta",
                        item_id=item.item_id,
                        output_index=item.output_index,
                        delta=args,
                    )
                )
        return events

    def _start_call(self, call: _Call) -> list[Event]:
        item_id = ids.function_call_id()
        if call.name in self._hidden:
            call.item = self._open_item("function_call", item_id, None)
            return []
        # Items are streamed one after another, as the Responses API does: what came before a
        # visible call is finished before the call is announced.
        events = self._close_early(self._reasoning) + self._close_early(self._message)
        self._reasoning = self._message = None
        item = convert.function_call_item(call.call_id, call.name, "", item_id, "in_progress")
        call.item = self._open_item("function_call", item_id, item)
        events.append(self._added(call.item, item))
        if call.arguments:  # arguments that came before the name
            events.append(
                self._seq.event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=call.item.output_index,
                    delta="".join(call.arguments),
                )
            )
        return events

    # -- finishing ----------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """Close every open item, in the order they were opened."""
        status = convert.item_status(self.finish_reason)
        events: list[Event] = []
        for call in self._calls.values():
            if call.item is None:  # a call whose name never came: still reassembled and run
                events += self._start_call(call)
        for opened in self._open:
            events += self._close(opened, status)
        self._open = []
        return events

    def _close_early(self, o: _Open | None) -> list[Event]:
        if o is None or o not in self._open:
            return []
        self._open.remove(o)
        return self._close(o, "completed")

    def _close(self, o: _Open, status: str) -> list[Event]:
        if o.hidden:
            return []
        at = {"item_id": o.item_id, "output_index": o.output_index}
        events: list[Event] = []
        if o.kind == "reasoning":
            text = "".join(o.text)
            events.append(self._seq.event("response.reasoning_text.done", **at, content_index=0, text=text))
            item = convert.reasoning_item(text, o.item_id, status)
        elif o.kind == "message":
            parts = []
            if o.part_open:
                part = convert.text_part("".join(o.text))
                events.append(
                    self._seq.event(
                        "response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[]
                    )
                )
                events.append(self._seq.event("response.content_part.done", **at, content_index=0, part=part))
                parts.append(part)
            if o.refusal:
                refusal = "".join(o.refusal)
                events.append(
                    self._seq.event("response.refusal.done", **at, content_index=len(parts), refusal=refusal)
                )
                parts.append({"type": "refusal", "refusal": refusal})
            item = convert.message_item(parts, o.item_id, status)
        else:
            call = next(c for c in self._calls.values() if c.item is o)
            arguments = "".join(call.arguments)
            events.append(self._seq.event("response.function_call_arguments.done", **at, arguments=arguments))
            item = convert.function_call_item(call.call_id, call.name, arguments, o.item_id, status)
        self._done.append((o.output_index, item))
        events.append(self._seq.event("response.output_item.done", output_index=o.output_index, item=item))
        return events

    # -- results ------------------------------------------------------------------------------

    @property
    def items(self) -> list[dict[str, Any]]:
        """The visible output items, by output index (valid after `finish`)."""
        return [item for _, item in sorted(self._done, key=lambda pair: pair[0])]

    def completion(self) -> dict[str, Any]:
        """The chat completion this stream amounts to, as a non-streaming call would return it."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._all_text) or None}
        if self._all_refusal:
            message["refusal"] = "".join(self._all_refusal)
        if self._all_thinking:
            message["reasoning_content"] = "".join(self._all_thinking)
        calls = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": "".join(c.arguments)},
            }
            for _, c in sorted(self._calls.items())
        ]
        if calls:
            message["tool_calls"] = calls
        return {
            "id": self._meta.get("id", ""),
            "object": "chat.completion",
            "created": self._meta.get("created", 0),
            "model": self._meta.get("model", ""),
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }
