"""Serializers: turn state and results into bytes, and back.

A serializer is anything with ``name``, ``dumps(obj) -> bytes`` and ``loads(data) -> obj``.
Every stored record names the serializer that wrote it, so a record is always read back with
the one that wrote it, whatever the current default is.

``auto`` (the default) writes with pickle protocol 5 and falls back to dill only for what
pickle refuses: dill is 30-60x slower to dump, so it is not used where pickle works.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .errors import SerializationError

__all__ = [
    "AutoSerializer",
    "DillSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "get_serializer",
    "register_serializer",
]


@runtime_checkable
class Serializer(Protocol):
    """What a serializer provides."""

    @property
    def name(self) -> str:
        """The name stored with each record, used to find the serializer on load."""
        ...

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Deserialize ``data``."""
        ...


# Errors the pickle machinery raises for objects it cannot handle.
_REFUSED = (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError)


class PickleSerializer:
    """pickle, protocol 5."""

    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj`` with pickle protocol 5."""
        return pickle.dumps(obj, protocol=5)

    def loads(self, data: bytes) -> Any:
        """Deserialize pickle bytes."""
        return pickle.loads(data)


class DillSerializer:
    """dill: pickles lambdas, closures, and more. Imported on first use."""

    name = "dill"

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj`` with dill."""
        import dill

        data: bytes = dill.dumps(obj, protocol=5)
        return data

    def loads(self, data: bytes) -> Any:
        """Deserialize dill bytes."""
        import dill

        return dill.loads(data)


class JsonSerializer:
    """JSON, canonical (sorted keys, no spaces), so equal values give equal bytes."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj`` as canonical JSON."""
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        """Deserialize JSON bytes."""
        return json.loads(data)


class AutoSerializer:
    """pickle where it works, dill where pickle refuses; records say which one wrote them."""

    name = "auto"

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``; see :func:`encode` for the form that reports which wrote it."""
        return encode(self, obj)[1]

    def loads(self, data: bytes) -> Any:
        """Deserialize bytes written by pickle or dill (dill reads both)."""
        return DillSerializer().loads(data)


_REGISTRY: dict[str, Serializer] = {}


def register_serializer(serializer: Serializer) -> None:
    """Make ``serializer`` available by its name (for ``serializer="name"`` and for loading)."""
    if not isinstance(serializer, Serializer):
        raise TypeError(
            f"{serializer!r} is not a serializer: it needs a name, dumps(obj) and loads(data)"
        )
    _REGISTRY[serializer.name] = serializer


for _s in (PickleSerializer(), DillSerializer(), JsonSerializer(), AutoSerializer()):
    register_serializer(_s)


def get_serializer(spec: str | Serializer | None) -> Serializer:
    """Resolve a serializer name or object (``None`` means ``auto``)."""
    if spec is None:
        return _REGISTRY["auto"]
    if _REGISTRY.get(getattr(spec, "name", "")) is spec:
        return spec  # a registered one: skip the slow runtime Protocol check
    if isinstance(spec, str):
        try:
            return _REGISTRY[spec]
        except KeyError:
            raise ValueError(
                f"unknown serializer {spec!r}; choose one of {sorted(_REGISTRY)} or "
                "register your own with register_serializer()"
            ) from None
    if isinstance(spec, Serializer):
        _REGISTRY.setdefault(spec.name, spec)  # so its records can be read back by name
        return spec
    raise TypeError(
        f"serializer must be a name or an object with name/dumps/loads, not {type(spec).__name__}"
    )


def encode(serializer: Serializer, obj: Any, what: str = "state") -> tuple[str, bytes]:
    """Serialize ``obj``; return the name of the serializer that wrote it, and the bytes.

    Raises:
        SerializationError: naming the field of ``obj`` (a mapping) that could not be written.
    """
    if type(serializer) is AutoSerializer:
        try:
            return "pickle", pickle.dumps(obj, protocol=5)
        except _REFUSED:
            try:
                return "dill", _REGISTRY["dill"].dumps(obj)
            except Exception as exc:
                raise _explain(obj, what, "pickle or dill", exc) from exc
    try:
        return serializer.name, serializer.dumps(obj)
    except Exception as exc:
        raise _explain(obj, what, serializer.name, exc) from exc


def decode(name: str, data: bytes) -> Any:
    """Deserialize ``data`` with the serializer called ``name`` (the one that wrote it)."""
    try:
        serializer = _REGISTRY[name]
    except KeyError:
        raise SerializationError(
            f"this record was written by serializer {name!r}, which is not registered in this "
            "process; call register_serializer() with it before loading"
        ) from None
    return serializer.loads(data)


def _explain(obj: Any, what: str, by: str, exc: BaseException) -> SerializationError:
    """Find the field of ``obj`` that cannot be serialized, and say so."""
    culprit = _find_culprit(obj, by)
    if culprit is not None:
        path, value = culprit
        field = f"{what}{path}"
        return SerializationError(
            f"{field} = {short_repr(value)} ({type(value).__name__}) cannot be serialized by {by}: "
            f"{exc}. Store something serializable there (e.g. a list instead of a generator), "
            "or leave it out of the state",
            field=field,
        )
    return SerializationError(
        f"{what} of type {type(obj).__name__} cannot be serialized by {by}: {exc}. "
        "Make it serializable, or choose another serializer=",
        field=what,
    )


def _find_culprit(obj: Any, by: str, depth: int = 0) -> tuple[str, Any] | None:
    items: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        items = [(f"[{k!r}]" if depth else f".{k}", v) for k, v in obj.items()]
    elif isinstance(obj, list | tuple):
        items = [(f"[{i}]", v) for i, v in enumerate(obj)]
    for path, value in items:
        if not _serializes(value, by):
            deeper = _find_culprit(value, by, depth + 1) if depth < 8 else None
            if deeper is not None:
                return path + deeper[0], deeper[1]
            return path, value
    return None


def _serializes(value: Any, by: str) -> bool:
    try:
        if by == "json":
            _REGISTRY["json"].dumps(value)
        elif by == "pickle or dill":
            try:
                pickle.dumps(value, protocol=5)
            except _REFUSED:
                _REGISTRY["dill"].dumps(value)
        else:
            _REGISTRY[by].dumps(value)
    except Exception:  # noqa: BLE001 - probing: any failure means 'not this one'
        return False
    return True


def short_repr(value: object) -> str:
    """``repr(value)`` cut to 60 characters, for error messages about a value."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def error_text(exc: BaseException) -> str:
    """``"ValueError: bad row 7"``, or the type alone when the message is empty.

    The text an operation's record keeps of the exception that ended it (``KeyboardInterrupt``,
    not ``KeyboardInterrupt: ``).
    """
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
