"""``NamedTuple``, ``Protocol`` and ``dataclass`` for class statements, without importing
:mod:`typing` or :mod:`dataclasses` at run time.

Some facts this module relies on:

* Importing :mod:`typing` costs a few milliseconds at every start of an interpreter, and on
  CPython ≤ 3.11 it imports :mod:`re` as well; every ``s6ipc NAME`` call and every in-place
  upgrade's pause pays it. With ``from __future__ import annotations`` (in every module of
  s6ipc) annotations stay strings, so names used only in annotations come from :mod:`typing`
  under ``TYPE_CHECKING = False`` / ``if TYPE_CHECKING:`` — a block mypy reads and Python skips.
* Two constructs of :mod:`typing` are used *at run time*, as base classes: ``NamedTuple`` (the
  class statement builds a :func:`collections.namedtuple`) and ``Protocol`` (a structural type:
  at run time only a base class with no behaviour that matters here, none of ours being
  ``runtime_checkable``).
* :mod:`dataclasses` imports :mod:`inspect` (which imports ``ast``, ``dis``, ``tokenize``…) and
  :mod:`re`: several milliseconds more. Our data classes use only the decorator (``eq``,
  ``frozen``) and ``field(default=…, default_factory=…)``, never inherit from one another, and
  nothing calls ``dataclasses.fields``/``replace``/``asdict`` on them.

So mypy sees :mod:`typing`'s own ``NamedTuple`` and ``Protocol`` through this module, and the
interpreter sees stand-ins with the same run-time behaviour: ``class P(NamedTuple)`` with
annotated fields (defaults allowed) and methods gives the same ``collections.namedtuple`` class
as :mod:`typing` does; ``Protocol`` is :class:`object`; ``dataclass`` adds the same
``__init__`` (fields in order, defaults, default factories), ``__repr__``, ``__eq__`` (same class,
fields compared as a tuple), ``__hash__`` (``None`` when ``eq`` and not ``frozen``, the fields'
hash when both) and, when ``frozen``, the ``__setattr__``/``__delattr__`` that refuse to change a
field (:class:`FrozenInstanceError`, an AttributeError as in :mod:`dataclasses`) as
:mod:`dataclasses` does, leaving any of them the class defines itself. The start-up test
(tests/programs/test_startup_imports.py) checks that the programs never import :mod:`typing`.
"""

from __future__ import annotations

__all__ = [
    "NamedTuple", "Protocol", "Generic", "TypeVar", "dataclass", "field", "FrozenInstanceError", "cast",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import FrozenInstanceError as FrozenInstanceError
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
    from typing import Generic as Generic
    from typing import NamedTuple as NamedTuple
    from typing import Protocol as Protocol
    from typing import TypeVar as TypeVar
    from typing import cast as cast
else:
    import collections
    import sys

    #: dataclasses gives ``__match_args__`` from Python 3.10 on (where ``match`` exists).
    _MATCH_ARGS = sys.version_info >= (3, 10)

    class Generic:
        """Base of a generic class: ``Generic[T]`` and ``C[X]`` are the class itself at run time."""

        def __class_getitem__(cls, params: object) -> type:
            return cls

    def TypeVar(name: str, *constraints: object, **options: object) -> str:  # noqa: N802
        """A type variable at run time: its name (only ``Generic[…]`` and mypy look at it)."""
        return name

    def cast(typ: object, value: object) -> object:
        """:func:`typing.cast` at run time: *value*, unchanged (the type is for mypy)."""
        return value

    # What typing.NamedTuple refuses to set on the class, and what it takes from the class body.
    _PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                             "_field_defaults", "_make", "_replace", "_asdict", "_source"})
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__", "__qualname__"})

    class _NamedTupleMeta(type):
        def __new__(cls, typename, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(cls, typename, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            defaults = [namespace[name] for name in fields if name in namespace]
            if any(name not in namespace for name in fields[len(fields) - len(defaults):]):
                raise TypeError(f"{typename}: a field without a default follows one with a default")
            made = collections.namedtuple(typename, fields, defaults=defaults,
                                          module=namespace.get("__module__"))
            made.__annotations__ = dict(namespace.get("__annotations__", {}))
            made.__qualname__ = namespace.get("__qualname__", typename)
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in made._fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMeta):
        """Base of a class statement that makes a :func:`collections.namedtuple`."""

    Protocol = object

    class FrozenInstanceError(AttributeError):
        """Assignment to a field of a frozen data class."""

    _MISSING = object()
    _HAS_FACTORY = object()

    class _Field:
        __slots__ = ("default", "default_factory")

        def __init__(self, default, default_factory):
            self.default = default
            self.default_factory = default_factory

    def field(*, default=_MISSING, default_factory=_MISSING):
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        return _Field(default, default_factory)

    def dataclass(cls=None, /, *, eq=True, frozen=False):
        def wrap(cls):
            return _make_dataclass(cls, eq, frozen)

        return wrap if cls is None else wrap(cls)

    def _set_new(cls, name, value):
        if name not in cls.__dict__:
            value.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, value)

    def _make_dataclass(cls, eq, frozen):
        names = list(cls.__dict__.get("__annotations__", {}))
        globals_ = {"_HAS_FACTORY": _HAS_FACTORY, "_object_setattr": object.__setattr__}
        params, body = [], []
        for name in names:
            value = cls.__dict__.get(name, _MISSING)
            default, factory = (value.default, value.default_factory) if isinstance(value, _Field) \
                else (value, _MISSING)
            if isinstance(value, _Field):
                if default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, default)
            if factory is not _MISSING:
                globals_[f"_factory_{name}"] = factory
                params.append(f"{name}=_HAS_FACTORY")
                value_text = f"_factory_{name}() if {name} is _HAS_FACTORY else {name}"
            elif default is not _MISSING:
                globals_[f"_default_{name}"] = default
                params.append(f"{name}=_default_{name}")
                value_text = name
            else:
                if params and "=" in params[-1]:
                    raise TypeError(f"non-default argument {name!r} follows default argument")
                params.append(name)
                value_text = name
            body.append(f"_object_setattr(self, {name!r}, {value_text})" if frozen
                        else f"self.{name} = {value_text}")
        source = f"def __init__(self, {', '.join(params)}):\n " + "\n ".join(body or ["pass"])
        namespace = {}
        exec(source, globals_, namespace)
        _set_new(cls, "__init__", namespace["__init__"])
        fields = tuple(names)

        def __repr__(self):
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields)
            return f"{self.__class__.__qualname__}({inner})"

        _set_new(cls, "__repr__", __repr__)
        if eq:
            def __eq__(self, other):
                if other.__class__ is self.__class__:
                    return tuple(getattr(self, n) for n in fields) == tuple(getattr(other, n) for n in fields)
                return NotImplemented

            _set_new(cls, "__eq__", __eq__)
        class_hash = cls.__dict__.get("__hash__", _MISSING)
        explicit_hash = not (class_hash is _MISSING or (class_hash is None and "__eq__" in cls.__dict__))
        if eq and not explicit_hash:
            if frozen:
                def __hash__(self):
                    return hash(tuple(getattr(self, n) for n in fields))

                cls.__hash__ = __hash__
            else:
                cls.__hash__ = None
        if frozen:
            def __setattr__(self, name, value):
                if type(self) is cls or name in fields:
                    raise FrozenInstanceError(f"cannot assign to field {name!r}")
                super(cls, self).__setattr__(name, value)

            def __delattr__(self, name):
                if type(self) is cls or name in fields:
                    raise FrozenInstanceError(f"cannot delete field {name!r}")
                super(cls, self).__delattr__(name)

            _set_new(cls, "__setattr__", __setattr__)
            _set_new(cls, "__delattr__", __delattr__)
        if _MATCH_ARGS and "__match_args__" not in cls.__dict__:
            cls.__match_args__ = fields
        return cls
