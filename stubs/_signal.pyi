# signal's C half (CPython's Modules/signalmodule.c): the same functions and constants that
# signal.py re-exports, but the constants are plain ints and the functions return ints and sets
# of ints where signal.py wraps them in its Signals/Handlers enums. typeshed describes only
# signal; s6ipc imports _signal on the daemons' start path (no enum module before ready), and
# typing it as signal is exact for every use there (IntEnum members are ints).
from signal import *
