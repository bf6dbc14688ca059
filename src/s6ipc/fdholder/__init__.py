"""Fd holding, wire-compatible with s6's s6-fdholderd and its clients.

The wire and its parts:

* :mod:`.protocol` — the s6-fdholder requests and replies (parsing, encoders), over the framing of
  :mod:`s6ipc.base.unixmessage` (skalibs' ``unixmessage`` with SCM_RIGHTS);
* :mod:`.tai` — TAIN timestamps (the absolute expiry times on the wire and in dumps);
* :mod:`.dump` — dumps in the environment (``S6_FD#``, ``S6_FD_i``…).

The client:

* :mod:`.client` — :class:`~s6ipc.fdholder.client.FdHolderClient`, the client API (also
  ``from s6ipc import FdHolderClient``).

The daemon (fdholderd):

* :mod:`.server` — :class:`~s6ipc.fdholder.server.FdHolderDaemon`, the loop: clients, deadlines,
  lameduck, the request handlers;
* :mod:`.store` — the held descriptors, in s6's slot order, with their limits;
* :mod:`.rights` — what a client may do, from the allowing rule's environment;
* :mod:`.ere` — POSIX extended regexes with glibc's semantics (the rights' regexes);
* :mod:`.life` — the in-place upgrade (SIGUSR2) and the live view of the daemon.

Submodules are imported on demand: the programs load only what they use.
"""
