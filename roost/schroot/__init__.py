"""The schroot-compatible front door: ``roost schroot …`` and ``roost-schroot``.

It accepts the schroot 1.6 command line that sbuild and people use and maps
it onto the engine:

=====================  ====================================================
``chroot:NAME``        an image, or an alias of one
``source:NAME``        a maintenance session of the image, promoted into
                       its next generation when it ends successfully
``session:ID``         an existing session
=====================  ====================================================

Actions: ``-l`` (list), ``-i`` (info, in schroot's text format, which sbuild
scrapes), ``--config`` (schroot.conf keys, which autopkgtest reads),
``--location``, ``-b`` (begin; prints the session id), ``-r`` (run), ``-e``
(end), ``--recover-session``, and the automatic session (no action: begin,
run, end). Semantics follow schroot 1.6 where build tools
depend on them: the working-directory rules, the environment (``SCHROOT_*``
variables, the environment filter of ``-p``), and exit codes (a command's own
status; 1 for everything that goes wrong around it, a command killed by a
signal included). Deliberate differences are listed in docs/schroot.md.

One module per layer, each importing only what it needs when it needs it
(``-r``'s fast path must not load the engine, YAML or typing):

============  ==============================================================
options       the command line: :func:`~.options.parse`, ``--help``, exit code
catalogue     ``chroot:``/``source:``/``session:`` names, what the caller sees
info          ``-i`` in schroot's text format
config        ``--config`` in schroot.conf's format (autopkgtest reads it)
keys          ``-o KEY=VALUE``: the table of keys the door takes
sessionnames  long session names (piuparts') mapped onto roost ids
environment   schroot's environment, PATHs, shell and directory rules
running       start a command in a session, wait for it as schroot does
fast          ``-r`` without the engine
actions       list, info, location, begin, run, end, recover, automatic
door          the entry point (``roost-schroot``, ``roost schroot``)
importer      ``roost image import-schroot``: schroot.conf and chroot.d
============  ==============================================================

The door and the importer reach the engine only through ``Engine``'s public
methods.
"""

from .door import main as main
