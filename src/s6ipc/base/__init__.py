"""The ground floor: the standard library only, and nothing else of s6ipc above it.

Errors and their exit codes, option scanning, the one-line reporter, the clock, descriptors,
raw environments, envdirs, signal state, the self-pipe, the accept back-off, exec and spawn,
privileges, skalibs' message framing, the sd_notify backends.
"""
