"""Form bodies parsed the way PHP fills ``$_POST`` (``parse_str``), brackets and all.

An event delivery is built like PHP's ``http_build_query`` (``data[CHAT_ID]=8773&auth[domain]=…``) and read by
handlers written in PHP, so the sink reads it with PHP's own rules rather than a generic form parser: a key's
base name has ``.`` and space turned into ``_``; ``a[b][c]`` nests; ``a[]`` appends at the next integer key;
keys that are canonical decimal integers become ints; text after a closing bracket that is not another ``[`` is
dropped; an unclosed ``[`` becomes ``_``; more than ``max_depth`` levels drop the whole variable; only the first
``max_vars`` pairs count. The tests compare this with ``php -r 'parse_str(…)'``.
"""

from __future__ import annotations

import re
from typing import Union

__all__ = ["PhpArray", "parse_php_query"]

_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1
_CANONICAL_INT = re.compile(rb"-?[1-9][0-9]*|0")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")

Key = Union[int, str]


class PhpArray(dict):
    """A ``dict`` that also remembers PHP's next free integer key, for ``a[]=`` appends."""

    __slots__ = ("next_index",)

    def __init__(self) -> None:
        super().__init__()
        self.next_index: int | None = None  # None: no integer key yet (PHP's ZEND_LONG_MIN marker)

    def set(self, key: Key, value: object) -> None:
        self[key] = value
        if isinstance(key, int) and (self.next_index is None or key >= self.next_index):
            self.next_index = key + 1 if key < _LONG_MAX else _LONG_MAX

    def append(self, value: object) -> bool:
        key = 0 if self.next_index is None else self.next_index
        if key in self:  # PHP refuses the insert (only possible at the top of the integer range)
            return False
        self.set(key, value)
        return True


def _url_decode(raw: bytes) -> bytes:
    return _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw.replace(b"+", b" "))


def _php_key(raw: bytes) -> Key:
    if _CANONICAL_INT.fullmatch(raw):
        number = int(raw)
        if _LONG_MIN <= number <= _LONG_MAX:
            return number
    return raw.decode("utf-8", errors="replace")


def _register(target: PhpArray, name: bytes, value: str, max_depth: int) -> None:
    name = name.split(b"\0", 1)[0].lstrip(b" ")  # the C code reads the name up to a NUL
    chars = bytearray(name)
    bracket = -1
    for i, c in enumerate(chars):
        if c in b" .":
            chars[i] = ord("_")
        elif c == ord("["):
            bracket = i
            break
    base = bytes(chars if bracket < 0 else chars[:bracket])
    if not base:
        return
    if bracket < 0:
        target.set(_php_key(base), value)
        return

    table = target
    index: bytes | None = base
    pos = bracket  # at a '['
    depth = 0
    while True:
        depth += 1
        if depth > max_depth:
            target.pop(_php_key(base), None)
            return
        start = pos + 1
        scan = start + 1 if start < len(chars) and chars[start] in b" \r\n\t" else start
        if scan < len(chars) and chars[scan] == ord("]"):
            new_index: bytes | None = None
            close = scan
        else:
            close = chars.find(b"]", scan)
            if close < 0:
                if table is target:
                    # Not an index after all: the '[' and what follows become part of the plain name.
                    rest = bytes(chars[start:]).translate(bytes.maketrans(b" .[", b"___"))
                    index = base + b"_" + rest
                break
            new_index = bytes(chars[start:close])
        if index is None:
            child = PhpArray()
            if not table.append(child):
                return
        else:
            key = _php_key(index)
            child = table.get(key)
            if not isinstance(child, PhpArray):
                child = PhpArray()
                table.set(key, child)
        table = child
        index = new_index
        pos = close + 1
        if pos < len(chars) and chars[pos] == ord("["):
            continue
        break
    if index is None:
        table.append(value)
    else:
        table.set(_php_key(index), value)


def parse_php_query(body: Union[bytes, str], *, max_vars: int = 1000, max_depth: int = 64) -> PhpArray:
    """Parses an ``application/x-www-form-urlencoded`` body as PHP's ``parse_str`` does (PHP 8 rules).

    Values are strings (decoded as UTF-8), nested arrays are :class:`PhpArray` (a ``dict``); keys are ``int``
    where PHP makes them integers. ``max_vars`` and ``max_depth`` are PHP's ``max_input_vars`` and
    ``max_input_nesting_level`` defaults.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    result = PhpArray()
    count = 0
    for pair in body.split(b"&"):
        if not pair:
            continue
        count += 1
        if count > max_vars:
            break
        name, sep, raw_value = pair.partition(b"=")
        value = _url_decode(raw_value).decode("utf-8", errors="replace") if sep else ""
        _register(result, _url_decode(name), value, max_depth)
    return result
