"""roost for an ordinary user: no sudo, no setuid roost, sessions in namespaces of their own.

- :mod:`.ids`: the user's subordinate uid and gid ranges, laid out "keep-id";
- :mod:`.userns`: make a mapped user namespace (newuidmap, newgidmap), join
  one, run code in one;
- :mod:`.holder`: the process that owns a session's user, mount and pid
  namespaces; run, enter and end join it;
- :mod:`.setup`: the overlay (``userxattr``), /proc, /sys and /dev inside;
- :mod:`.content`: import, export, measure and remove trees inside;
- :mod:`.lifecycle`: the operations (create, begin, run, promote, end,
  recover …) on the same on-disk layout, records and locks as system mode;
- :mod:`.fast`: ``session run`` without the engine;
- :mod:`.config`: which mode, and the user's XDG paths;
- :mod:`.doctor`: what is missing for rootless use, and how to fix it.

Nothing here is imported by the system mode.
"""
