"""Operation ids for calls: stable digests of bound arguments, and code fingerprints.

A digest is the same in every process and on every machine: it never depends on
``PYTHONHASHSEED``, on dict insertion order, or on the order a set happens to iterate in.
Common argument types have fast paths; numpy arrays are hashed by their buffer, not a pickle.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import pathlib
import struct
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import xxhash

from .serializers import short_repr

__all__ = ["CallDigester", "code_fingerprint", "digest_value", "qualified_name"]

_INT = struct.Struct("<q")
_BUILTIN_BASES: tuple[type, ...] = (str, int, float, bytes, bytearray, list, tuple)
_FLOAT = struct.Struct("<d")
_BY_REPR = (pathlib.PurePath, complex, range, slice)
#: More types digested by their repr, by module. A module not loaded yet has made no value of
#: its types, so each is looked up once loaded: ``import resumable`` does not import datetime,
#: decimal, fractions and uuid (~5 ms) for them.
_BY_REPR_IN: Final = (
    ("datetime", ("date", "time", "timedelta", "timezone")), ("decimal", ("Decimal",)),
    ("fractions", ("Fraction",)), ("uuid", ("UUID",)),
)  # fmt: skip


def _by_repr(obj: object) -> bool:
    """Whether ``obj`` is digested by its repr (a date, a Decimal, a path, a range...)."""
    if isinstance(obj, _BY_REPR):
        return True
    for module_name, names in _BY_REPR_IN:
        module = sys.modules.get(module_name)
        if module is not None:
            types_ = tuple(t for t in (getattr(module, n, None) for n in names) if t is not None)
            if isinstance(obj, types_):
                return True
    return False


class _Undigestable(TypeError):
    def __init__(self, path: str, value: object) -> None:
        self.path = path
        self.value = value
        super().__init__(path)


def _feed(h: Any, obj: Any, path: str, depth: int) -> None:  # noqa: PLR0912, PLR0915 - one dispatch
    """Feed a type-tagged, order-independent encoding of ``obj`` into hasher ``h``."""
    t = type(obj)
    if t is str:
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"s" + _INT.pack(len(data)) + data)
    elif t is int:
        if -(1 << 63) <= obj < (1 << 63):
            h.update(b"i" + _INT.pack(obj))
        else:
            text = str(obj).encode()
            h.update(b"I" + _INT.pack(len(text)) + text)
    elif t is bool or obj is None:
        h.update(b"c" + repr(obj).encode())
    elif t is float:
        h.update(b"f" + _FLOAT.pack(obj))
    elif t is bytes or t is bytearray or t is memoryview:
        data = bytes(obj)
        h.update(b"b" + _INT.pack(len(data)))
        h.update(data)
    elif depth > 64:
        raise _Undigestable(path, obj)
    elif t is tuple or t is list:
        h.update((b"t" if t is tuple else b"l") + _INT.pack(len(obj)))
        for i, item in enumerate(obj):
            _feed(h, item, f"{path}[{i}]", depth + 1)
    elif isinstance(obj, Mapping):
        _feed_unordered(h, b"d", ((k, v) for k, v in obj.items()), path, depth, pairs=True)
        _feed_type(h, t, dict)
    elif isinstance(obj, set | frozenset):
        _feed_unordered(h, b"S", ((v, None) for v in obj), path, depth, pairs=False)
    elif isinstance(obj, enum.Enum):
        _feed_type(h, t, None)
        _feed(h, obj.value, f"{path}.value", depth + 1)
    elif _by_repr(obj):
        _feed_type(h, t, None)
        h.update(repr(obj).encode("utf-8", "surrogatepass"))
    elif _is_ndarray(obj):
        _feed_array(h, obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed_type(h, t, None)
        for f in dataclasses.fields(obj):
            _feed(h, f.name, path, depth + 1)
            _feed(h, getattr(obj, f.name), f"{path}.{f.name}", depth + 1)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        _feed_type(h, t, None)
        _feed(h, tuple(obj), path, depth + 1)
    elif isinstance(obj, type):
        h.update(b"C")
        _feed_type(h, obj, None)
    elif isinstance(obj, _BUILTIN_BASES):
        # A subclass of a built-in value type (class Name(str)): its type and its value.
        _feed_type(h, t, None)
        base = next(b for b in _BUILTIN_BASES if isinstance(obj, b))
        _feed(h, base(obj), path, depth + 1)
    elif _is_plain_instance(obj):
        # An instance of an ordinary class (a method's `self`): its type and attributes.
        _feed_type(h, t, None)
        _feed_unordered(h, b"o", vars(obj).items(), path, depth, pairs=True)
    else:
        raise _Undigestable(path, obj)


def _is_plain_instance(obj: object) -> bool:
    t = type(obj)
    return (
        hasattr(obj, "__dict__")
        and not callable(obj)
        and t.__module__ not in ("builtins", "types", "_io", "io", "socket", "threading")
        and not isinstance(obj, BaseException)
    )


def _feed_type(h: Any, t: type, plain: type | None) -> None:
    if t is not plain:
        h.update(b"T" + f"{t.__module__}.{t.__qualname__}".encode())


def _feed_unordered(
    h: Any, tag: bytes, items: Iterable[tuple[object, object]], path: str, depth: int,
    *, pairs: bool,
) -> None:  # fmt: skip
    digests = []
    for k, v in items:
        sub = xxhash.xxh3_128()
        where = (f".{k}" if tag == b"o" else f"[{k!r}]") if pairs else "{...}"
        _feed(sub, k, f"{path}{where}", depth + 1)
        if pairs:
            _feed(sub, v, f"{path}{where}", depth + 1)
        digests.append(sub.digest())
    digests.sort()
    h.update(tag + _INT.pack(len(digests)) + b"".join(digests))


def _is_ndarray(obj: object) -> bool:
    t = type(obj)
    return t.__module__ == "numpy" and t.__name__ == "ndarray"


def _feed_array(h: Any, arr: Any) -> None:
    if arr.dtype.hasobject:
        raise TypeError("numpy arrays of Python objects cannot be digested by their buffer")
    h.update(b"A" + f"{arr.dtype.str}|{arr.shape}".encode())
    data = arr if arr.flags.c_contiguous else arr.copy(order="C")
    h.update(memoryview(data).cast("B"))


def digest_value(obj: object, name: str = "value") -> str:
    """A stable hex digest of ``obj``.

    Raises:
        TypeError: ``obj`` (or a part of it, named in the message) cannot be digested.
    """
    h = xxhash.xxh3_128()
    try:
        _feed(h, obj, name, 0)
    except _Undigestable as exc:
        raise TypeError(
            f"{exc.path} = {short_repr(exc.value)} ({type(exc.value).__name__}) cannot be digested"
        ) from None
    return h.hexdigest()


def qualified_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function (``__main__`` stays ``__main__``)."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', repr(fn)))}"


class CallDigester:
    """Digests the calls of one function; the signature is analysed once, at decoration.

    ``f(2, y=3)``, ``f(2, 3)`` and ``f(x=2, y=3)`` give one id; defaults are applied.
    """

    def __init__(
        self, fn: Callable[..., Any], signature: inspect.Signature, ignore: frozenset[str]
    ) -> None:
        self.name = qualified_name(fn)
        self.signature = signature
        self.ignore = ignore
        params = list(signature.parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        #: Fast path: only positional-or-keyword parameters (the common case).
        self.simple = all(p.kind in plain for p in params)
        self.names = tuple(p.name for p in params)
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self.positional_only = {p.name for p in params if p.kind is p.POSITIONAL_ONLY}
        self.tags = {name: _name_tag(name) for name in self.names}
        #: (name, tag) of each parameter in order, for calls that pass every one positionally
        #: and ignore none (the common case): digested without binding.
        self.positional = None if ignore or not self.simple else tuple(self.tags.items())

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The bound arguments, defaults applied, in parameter order.

        Raises:
            TypeError: the arguments do not fit the signature (as a call would).
        """
        names = self.names
        if (
            self.simple
            and len(args) <= len(names)
            and not (kwargs.keys() & self.positional_only)
            and kwargs.keys() <= set(names[len(args) :])
        ):
            given = dict(zip(names, args, strict=False))
            given.update(kwargs)
            if len(given) == len(names):
                return {n: given[n] for n in names}
            defaults = self.defaults
            if all(n in given or n in defaults for n in names):
                return {n: given[n] if n in given else defaults[n] for n in names}
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def op_id(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The default op id: ``module.qualname:<digest of the bound arguments>``.

        Raises:
            TypeError: the arguments do not fit, or one cannot be digested (the message
                names it and shows the ``ignore=``/``op_id=`` way out).
        """
        ignore, tags, positional = self.ignore, self.tags, self.positional
        pairs: Iterable[tuple[tuple[str, bytes], Any]]
        if positional is not None and not kwargs and len(args) == len(positional):
            pairs = zip(positional, args, strict=True)  # what bind() gives, in its order
            flat = _flat(pairs)
            if flat is not None:  # the bytes _feed would give, hashed at once
                return f"{self.name}:{xxhash.xxh3_128_hexdigest(flat)[:24]}"
            pairs = zip(positional, args, strict=True)
        else:
            bound = self.bind(args, kwargs).items()
            pairs = (((name, tags[name]), value) for name, value in bound)
        h = xxhash.xxh3_128()
        for (name, tag), value in pairs:
            if name in ignore:
                continue
            h.update(tag)
            try:
                _feed(h, value, name, 0)
            except _Undigestable as exc:
                raise TypeError(
                    f"{self.name}: argument {exc.path} = {short_repr(exc.value)} "
                    f"({type(exc.value).__name__}) cannot be digested into a stable operation "
                    f"id. Leave it out with @resumable(ignore=[{name!r}]), or name the "
                    "operation yourself with @resumable(op_id='...{other_argument}...')"
                ) from None
        return f"{self.name}:{h.hexdigest()[:24]}"


def _flat(pairs: Iterable[tuple[tuple[str, bytes], Any]]) -> bytes | None:
    """What :func:`_feed` feeds for each tagged str or int value, joined; None for others.

    The digest of a stream is the digest of its bytes joined, so this is the same id, made
    without a call per argument (tests/test_decorator.py holds the two spellings equal).
    """
    parts: list[bytes] = []
    for (_, tag), value in pairs:
        t = type(value)
        if t is int and -(1 << 63) <= value < (1 << 63):
            parts += (tag, b"i", _INT.pack(value))
        elif t is str:
            data = value.encode("utf-8", "surrogatepass")
            parts += (tag, b"s", _INT.pack(len(data)), data)
        else:
            return None
    return b"".join(parts)


def _name_tag(name: str) -> bytes:
    data = name.encode("utf-8", "surrogatepass")
    return b"n" + _INT.pack(len(data)) + data


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A digest of a function's code that ignores line numbers and its docstring.

    Changes to the body, constants, names used, defaults and nested functions change it;
    moving the function within its file does not.
    """
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return "no-code"
    h = xxhash.xxh3_128()
    _feed_code(h, code, skip_doc=fn.__doc__)
    defaults = getattr(fn, "__defaults__", None) or ()
    for d in defaults:
        try:
            _feed(h, d, "default", 0)
        except _Undigestable:
            h.update(type(d).__qualname__.encode())
    return h.hexdigest()[:16]


def _feed_code(h: Any, code: types.CodeType, skip_doc: str | None = None) -> None:
    h.update(code.co_code)
    h.update("\x1f".join(code.co_names).encode())
    h.update("\x1f".join(code.co_varnames).encode())
    for i, const in enumerate(code.co_consts):
        if i == 0 and skip_doc is not None and const == skip_doc:
            continue  # editing the docstring does not change what the function computes
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            h.update(repr(const).encode("utf-8", "surrogatepass"))
