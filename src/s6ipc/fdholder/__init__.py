"""Fd holding, wire-compatible with s6's s6-fdholderd and its clients.

* :mod:`.protocol` — skalibs ``unixmessage`` framing with SCM_RIGHTS, request parsing, encoders;
* :mod:`.tai` — TAIN timestamps (the absolute expiry times on the wire and in dumps);
* :mod:`.ere` — POSIX extended regexes with glibc's semantics (the rights of a client);
* :mod:`.client` — :class:`~s6ipc.fdholder.client.FdHolderClient`, the client API (also
  ``from s6ipc import FdHolderClient``);
* :mod:`.dump` — dumps in the environment (``S6_FD#``, ``S6_FD_i``…);
* :mod:`.daemon` — the daemon's state and loop (fdholderd).

Submodules are imported on demand: the programs load only what they use.
"""
