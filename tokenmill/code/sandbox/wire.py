"""Plain data across the sandbox's process boundary: the only thing the candidate can hand back.

Runs in three processes (tokenmill, the harness, the candidate) and is sent to the last two
as source text, so it imports nothing but the standard library.

A value is encoded as tagged JSON, and decoding builds it again from builtin types only —
None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset — so no
object the candidate made reaches the side that checks it: an object whose `__eq__` always
says True (the classic reward hack) cannot cross, it is refused when it is encoded.
Frames are one JSON line each, at most `max_bytes` long, read with a deadline; anything
else (too long, not JSON, not a well-formed value) is `WireError`, and the reader then
treats the other side as failed.
"""

import json
import os
import select
import time

MAX_DEPTH = 64


class WireError(Exception):
    pass


_SCALARS = {type(None): "n", bool: "b", int: "i", float: "f", str: "s"}
_SEQUENCES = {list: "l", tuple: "t", set: "set", frozenset: "fset"}


def encode(value, depth=0, materialise=False):
    """The tagged form of a plain value; `materialise` turns iterators and ranges (a
    generator a candidate returns) into lists first. WireError for anything else."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    t = type(value)  # exact types: a subclass of int may override __eq__
    if t is type(None):
        return ["n"]
    if t is bool:
        return ["b", value]
    if t is int:
        return ["i", str(value)]
    if t is float:
        return ["f", repr(value)]
    if t is complex:
        return ["c", repr(value.real), repr(value.imag)]
    if t is str:
        return ["s", value]
    if t is bytes:
        return ["y", value.hex()]
    if t in _SEQUENCES:
        return [_SEQUENCES[t], [encode(v, depth + 1, materialise) for v in value]]
    if t is dict:
        return ["d", [[encode(k, depth + 1, materialise), encode(v, depth + 1, materialise)] for k, v in value.items()]]
    if materialise and (t is range or hasattr(t, "__next__")):
        return ["l", [encode(v, depth + 1, materialise) for v in _bounded(value)]]
    raise WireError(f"a {t.__name__} cannot cross the sandbox (plain data only: numbers, strings, bytes, "
                    "lists, tuples, dicts, sets, None)")


def _bounded(iterable, limit=1_000_000):
    out = []
    for v in iterable:
        out.append(v)
        if len(out) > limit:
            raise WireError(f"an iterator of more than {limit} items")
    return out


def decode(tree, depth=0):
    """The value `encode` made, from builtin types only; WireError if `tree` is not one."""
    if depth > MAX_DEPTH or not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise WireError("malformed value")
    tag, rest = tree[0], tree[1:]
    try:
        if tag == "n" and not rest:
            return None
        if tag == "b" and len(rest) == 1 and isinstance(rest[0], bool):
            return rest[0]
        if tag == "i" and len(rest) == 1 and isinstance(rest[0], str):
            return int(rest[0])
        if tag == "f" and len(rest) == 1 and isinstance(rest[0], str):
            return float(rest[0])
        if tag == "c" and len(rest) == 2 and all(isinstance(r, str) for r in rest):
            return complex(float(rest[0]), float(rest[1]))
        if tag == "s" and len(rest) == 1 and isinstance(rest[0], str):
            return rest[0]
        if tag == "y" and len(rest) == 1 and isinstance(rest[0], str):
            return bytes.fromhex(rest[0])
        if tag in ("l", "t", "set", "fset") and len(rest) == 1 and isinstance(rest[0], list):
            items = [decode(v, depth + 1) for v in rest[0]]
            return {"l": list, "t": tuple, "set": set, "fset": frozenset}[tag](items)
        if tag == "d" and len(rest) == 1 and isinstance(rest[0], list):
            out = {}
            for pair in rest[0]:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise WireError("malformed dict item")
                out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
            return out
    except (ValueError, TypeError, OverflowError) as e:  # int('x'), unhashable key, …
        raise WireError(f"malformed value ({type(e).__name__})") from None
    raise WireError(f"malformed value (tag {tag[:10]!r})")


def write_frame(fd, message):
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Reads newline-terminated JSON frames from `fd`, each ≤ `max_bytes`, each by a deadline."""

    def __init__(self, fd, max_bytes):
        self.fd, self.max_bytes, self.buf = fd, max_bytes, b""

    def read(self, deadline):
        """The next frame; WireError when it is late (`deadline`: a time.monotonic(), None
        for no deadline), too long, not JSON, or the stream ends."""
        while b"\n" not in self.buf:
            if len(self.buf) > self.max_bytes:
                raise WireError(f"a reply longer than {self.max_bytes} bytes")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and (left <= 0 or not select.select([self.fd], [], [], left)[0]):
                raise WireError("timeout")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise WireError("ended")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > self.max_bytes:
            raise WireError(f"a reply longer than {self.max_bytes} bytes")
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            raise WireError("a reply that is not JSON") from None
