"""The program kit: what programs share and the library does not do (print, exit, exec).

``registry`` (which name runs which program), ``entry`` (is this argv one of ours?), ``run``
(in-process chaining, stages), ``options`` (option families), ``daemon`` (running a serving
daemon). No program imports another program: what two share lives here.
"""
