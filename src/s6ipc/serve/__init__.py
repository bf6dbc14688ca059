"""The spawning super-server: the accept loop (``loop``), its children, who the peer is
(``peers``, ``tcppeer``), what a server carries across an upgrade and shows (``life``), where
its listening socket comes from (``intake``), and an ``Accept=yes`` connection as UCSPI (``ucspi``).
"""
