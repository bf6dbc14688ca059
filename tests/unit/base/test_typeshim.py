"""s6ipc.base.typeshim behaves at run time as typing.NamedTuple / dataclasses.dataclass do.

Each case defines the same class twice — once on the stand-in, once on the standard library — and
compares what the two do. (Under mypy, typeshim *is* the standard library: these tests are about
the interpreter's side only.)
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, Callable, Dict, List, Tuple

import pytest

from s6ipc.base import typeshim

# -- NamedTuple --------------------------------------------------------------------------------


def _point(base: Any) -> Any:
    class Point(base):
        """A point."""

        x: int
        y: int = 2
        label: str = "p"

        def total(self) -> int:
            return int(self.x + self.y)

    return Point


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, 5), {}), ((1,), {"label": "q"}),
                                          ((0, 0, "z"), {})])
def test_namedtuple_instances_match(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    ours, theirs = _point(typeshim.NamedTuple), _point(typing.NamedTuple)
    a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert tuple(a) == tuple(b) and a == b  # both are plain tuples
    assert repr(a) == repr(b)
    assert a.total() == b.total()
    assert a._replace(x=9) == b._replace(x=9) and type(a._replace(x=9)) is ours
    assert a._asdict() == b._asdict()
    assert hash(a) == hash(b)
    assert (a < ours(100)) == (b < theirs(100))


def test_namedtuple_class_matches() -> None:
    ours, theirs = _point(typeshim.NamedTuple), _point(typing.NamedTuple)
    assert ours._fields == theirs._fields == ("x", "y", "label")
    assert ours._field_defaults == theirs._field_defaults
    assert ours.__doc__ == theirs.__doc__ == "A point."
    assert ours.__module__ == theirs.__module__ == __name__
    assert ours.__mro__[1:] == theirs.__mro__[1:] == (tuple, object)
    assert list(ours.__annotations__) == list(theirs.__annotations__)
    with pytest.raises(TypeError):
        ours()  # x has no default
    with pytest.raises(AttributeError):
        ours(1).x = 2  # type: ignore[misc]


@pytest.mark.parametrize("base", [typeshim.NamedTuple, typing.NamedTuple])
def test_namedtuple_refusals(base: Any) -> None:
    with pytest.raises(TypeError):
        class DefaultFirst(base):
            a: int = 1
            b: int
    with pytest.raises(AttributeError):
        class OwnNew(base):
            a: int

            def _replace(self) -> None:
                pass


def test_protocol_is_a_plain_base_at_run_time() -> None:
    class Shape(typeshim.Protocol):  # type: ignore[misc]
        def area(self) -> float: ...

    class Square(Shape):
        def area(self) -> float:
            return 4.0

    assert Square().area() == 4.0
    assert typeshim.Protocol is object


def test_no_typing_or_dataclasses_imported() -> None:
    """What the module is for: a fresh interpreter importing it imports neither."""
    import subprocess

    code = ("import sys; import s6ipc.base.typeshim; "
            "print(sorted({'typing', 'dataclasses', 'inspect', 're'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- dataclass ---------------------------------------------------------------------------------

Maker = Callable[..., Any]


def _classes(dataclass: Maker, field: Maker) -> Dict[str, Any]:
    @dataclass(frozen=True)
    class Frozen:
        """Frozen."""

        a: int
        b: List[int] = field(default_factory=list)
        c: str = "c"

    @dataclass
    class Mutable:
        a: int
        b: int = field(default=3)

    @dataclass(eq=False)
    class Identity:
        a: int

    @dataclass(frozen=True)
    class OwnEq:
        a: int
        b: int = 0

        def __eq__(self, other: object) -> bool:
            return isinstance(other, OwnEq) and self.a == other.a

        def __repr__(self) -> str:
            return "own"

    @dataclass
    class Empty:
        pass

    return {"Frozen": Frozen, "Mutable": Mutable, "Identity": Identity, "OwnEq": OwnEq, "Empty": Empty}


OURS = _classes(typeshim.dataclass, typeshim.field)
THEIRS = _classes(dataclasses.dataclass, dataclasses.field)


@pytest.mark.parametrize("name, args, kwargs", [
    ("Frozen", (1,), {}), ("Frozen", (1, [2]), {}), ("Frozen", (1,), {"c": "x"}), ("Frozen", (), {"a": 5}),
    ("Mutable", (1,), {}), ("Mutable", (1, 2), {}), ("Identity", (1,), {}), ("OwnEq", (1, 2), {}),
    ("Empty", (), {}),
])
def test_dataclass_instances_match(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    ours, theirs = OURS[name], THEIRS[name]
    a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert repr(a).replace("_classes.<locals>.", "") == repr(b).replace("_classes.<locals>.", "")
    assert vars(a) == vars(b)
    assert (a == ours(*args, **kwargs)) == (b == theirs(*args, **kwargs))
    assert (a == a) and (a != object())
    assert (type(a).__hash__ is None) == (type(b).__hash__ is None)
    if type(b).__hash__ is not None and name != "Identity" and name != "Frozen":
        assert hash(a) == hash(ours(*args, **kwargs))
    assert getattr(type(a), "__match_args__", None) == getattr(type(b), "__match_args__", None)  # 3.10+


def test_dataclass_default_factory_is_called_per_instance() -> None:
    first, second = OURS["Frozen"](1), OURS["Frozen"](1)
    assert first.b == [] and first.b is not second.b


def test_frozen_hash_and_refusals() -> None:
    a = OURS["Frozen"](1, (2,))  # a hashable field value, as hash() needs
    assert hash(a) == hash(OURS["Frozen"](1, (2,)))
    cases = ((a, typeshim.FrozenInstanceError), (THEIRS["Frozen"](1), dataclasses.FrozenInstanceError))
    for obj, error in cases:
        with pytest.raises(error, match="cannot assign to field 'a'"):
            obj.a = 2
        with pytest.raises(error):
            obj.other = 2
        with pytest.raises(error, match="cannot delete field 'a'"):
            del obj.a
    assert issubclass(typeshim.FrozenInstanceError, AttributeError)


def test_mutable_and_identity() -> None:
    m = OURS["Mutable"](1)
    m.a = 7
    assert m == OURS["Mutable"](7, 3)
    assert OURS["Mutable"].__hash__ is None
    one = OURS["Identity"](1)
    assert one != OURS["Identity"](1) and hash(one) == object.__hash__(one)


def test_the_class_keeps_what_it_defines() -> None:
    assert OURS["OwnEq"](1, 2) == OURS["OwnEq"](1, 5)
    assert repr(OURS["OwnEq"](1)) == "own"
    # its own __eq__ leaves __hash__ None in the class body, which frozen + eq replace by the
    # fields' hash, as dataclasses does
    assert hash(OURS["OwnEq"](1, 2)) == hash(THEIRS["OwnEq"](1, 2)) == hash((1, 2))


def test_dataclass_signature_errors_match() -> None:
    for classes in (OURS, THEIRS):
        with pytest.raises(TypeError):
            classes["Frozen"]()
        with pytest.raises(TypeError):
            classes["Mutable"](1, 2, 3)
        with pytest.raises(TypeError):
            classes["Mutable"](1, z=2)
    with pytest.raises(TypeError):
        @typeshim.dataclass
        class DefaultFirst:
            a: int = 1
            b: int
    with pytest.raises(ValueError):
        typeshim.field(default=1, default_factory=list)


def test_generic_typevar_and_cast_at_run_time() -> None:
    """The run-time stand-ins: a generic class and its parametrised subclasses are plain classes,
    ``cast`` returns its value; none of it imports typing (the module does not, at run time)."""
    T = typeshim.TypeVar("T", contravariant=True)

    class Box(typeshim.Generic[T]):
        def __init__(self, item: object) -> None:
            self.item = item

    class IntBox(Box[int]):
        pass

    assert isinstance(IntBox(3), Box) and IntBox(3).item == 3
    assert IntBox.__mro__[1] is Box
    value = object()
    assert typeshim.cast(int, value) is value
    if typeshim.TYPE_CHECKING is False:  # what the programs run
        assert Box[int] is Box and T == "T"
