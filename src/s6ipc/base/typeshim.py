"""``NamedTuple`` and ``Protocol`` for class statements, without importing :mod:`typing` at run time.

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

So mypy sees :mod:`typing`'s own ``NamedTuple`` and ``Protocol`` through this module, and the
interpreter sees stand-ins with the same run-time behaviour: ``class P(NamedTuple)`` with
annotated fields (defaults allowed) and methods gives the same ``collections.namedtuple`` class
as :mod:`typing` does; ``Protocol`` is :class:`object`. The start-up test
(tests/programs/test_startup_imports.py) checks that the programs never import :mod:`typing`.
"""

from __future__ import annotations

__all__ = ["NamedTuple", "Protocol"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
    from typing import Protocol as Protocol
else:
    import collections

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
