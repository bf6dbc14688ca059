"""The programs, one thin module each: parse options, call the library, exec or serve.

Which name runs which module is :data:`s6ipc.chain.registry.PROGRAMS`; a program module imports
the library and the program kit (:mod:`s6ipc.chain`), never another program.
"""
