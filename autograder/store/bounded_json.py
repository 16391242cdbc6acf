"""Read JSON that a student made (a notebook, a result file) without recursing on its structure.

Python's ``json`` module recurses once per level of nesting: a file nested a few thousand
levels deep raises RecursionError (or worse, in C). ``loads_bounded`` parses with an explicit
stack in time linear in the text, and replaces every container nested deeper than ``max_depth``
by ``None``, counting how many it dropped, so the caller can still use the rest and say what
was removed.

>>> loads_bounded('{"a": [1, [2, [3]]], "b": "x"}', max_depth=2)
({'a': [1, None], 'b': 'x'}, 1)
"""

from __future__ import annotations

import json
import re

__all__ = ["loads_bounded", "MAX_DEPTH"]

MAX_DEPTH = 64  # a notebook's own structure is ~6 levels; its JSON outputs a few more
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACE = re.compile(r"[ \t\n\r]*")
_CONSTANTS = {"true": True, "false": False, "null": None, "NaN": float("nan"),
              "Infinity": float("inf"), "-Infinity": float("-inf")}
_scanstring = json.decoder.scanstring


_DROP = object()  # a container nested too deep: parsed to find its end, not kept


def _scalar(text: str, i: int):
    """(value, end) of the string, number or constant starting at ``i``."""
    if text[i:i + 1] == '"':
        return _scanstring(text, i + 1, True)
    for word, value in _CONSTANTS.items():
        if text.startswith(word, i):
            return value, i + len(word)
    match = _NUMBER.match(text, i)
    if not match:
        raise ValueError(f"invalid JSON at character {i}")
    number = match.group()
    return (float(number) if any(c in number for c in ".eE") else int(number)), match.end()


def _key(text: str, i: int, frame: list) -> int:
    """Read ``"key":`` at ``i`` into the object's frame; the index of its value."""
    if text[i:i + 1] != '"':
        raise ValueError(f"invalid JSON at character {i}: expected a key")
    frame[2], i = _scanstring(text, i + 1, True)
    i = _SPACE.match(text, i).end()
    if text[i:i + 1] != ":":
        raise ValueError(f"invalid JSON at character {i}: expected ':'")
    return _SPACE.match(text, i + 1).end()


def loads_bounded(text: str, max_depth: int = MAX_DEPTH):
    """(value, number of containers dropped for being nested deeper than ``max_depth``).

    Raises ValueError for text that is not JSON.
    """
    stack: list[list] = []  # per open container: [container or _DROP, is an object, key]
    dropped, i = 0, _SPACE.match(text, 0).end()
    while True:
        ch = text[i:i + 1]
        if ch in ("{", "["):  # a container opens
            inside_dropped = bool(stack) and stack[-1][0] is _DROP
            too_deep = inside_dropped or len(stack) >= max_depth
            dropped += too_deep and not inside_dropped
            frame = [_DROP if too_deep else ({} if ch == "{" else []), ch == "{", None]
            i = _SPACE.match(text, i + 1).end()
            if text[i:i + 1] != ("}" if frame[1] else "]"):
                stack.append(frame)
                if frame[1]:
                    i = _key(text, i, frame)
                continue
            value, i = frame[0], i + 1  # an empty container
        else:
            value, i = _scalar(text, i)
        while True:  # a value is complete: attach it; close what ends after it
            if not stack:
                if _SPACE.match(text, i).end() != len(text):
                    raise ValueError(f"extra data at character {i}")
                return (None if value is _DROP else value), dropped
            frame = stack[-1]
            if frame[0] is not _DROP:
                value = None if value is _DROP else value
                if frame[1]:
                    frame[0][frame[2]] = value
                else:
                    frame[0].append(value)
            i = _SPACE.match(text, i).end()
            ch = text[i:i + 1]
            if ch == ",":
                i = _SPACE.match(text, i + 1).end()
                if frame[1]:
                    i = _key(text, i, frame)
                break
            if ch != ("}" if frame[1] else "]"):
                raise ValueError(f"invalid JSON at character {i}")
            value, i = stack.pop()[0], i + 1
