"""The ``ckptstore`` command: find, compare, annotate, fetch and clean checkpoints from a shell.

Every command takes a store URL (a path, ``s3://bucket/prefix``, ``gs://...``, ...). Storage options
come from ``-S/--storage-option key=value`` before or after the command name (dotted keys nest:
``-S client_kwargs.endpoint_url=http://...``; ``-o`` before the command name is the old spelling), from
``CKPTSTORE_STORAGE_OPTIONS`` (a JSON object), and from each backend's usual environment variables
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``). A backend that does not answer is retried for
``--timeout`` seconds (``CKPTSTORE_TIMEOUT``; 5 by default). A checkpoint is named the same way by every
command (``best``, ``latest`` or an epoch). Every command takes ``--json``. Errors are one line on
stderr (``--debug`` shows the traceback) and the exit status says what went wrong:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     a checkpoint failed verification (the message names the file)
2     bad usage or an invalid argument
3     not found: no store, no such checkpoint, no file matching the pattern
4     the backend refused: credentials, a missing package, an unreachable server
5     any other ckptstore error (a conflict, a failed write)
====  ==========================================================================

Needs the ``cli`` extra (click and rich); ``plot`` also needs the ``plot`` extra (matplotlib).

The package: :mod:`._app` holds the group and what the commands share (state, exit statuses, output);
each other module owns a group of commands and registers them on the group when it is imported:
:mod:`.listing` (``ls``, ``show``, ``log``; :mod:`.runs` prints ``ls`` of a folder of stores),
:mod:`.transfer` (``download``), :mod:`.finding`
(``select``, ``latest``), :mod:`.maintenance` (``verify``, ``gc``, ``pin``, ``unpin``, ``rollback``,
``reindex``, ``metadata``) and :mod:`.plot` (``plot``). :mod:`._reference` writes ``docs/cli.md``.
"""

from __future__ import annotations

from . import finding, listing, maintenance, plot, transfer  # noqa: F401 (importing one registers its commands)
from ._app import EXIT_CODES, cli, main, storage_options
from ._reference import reference_markdown
from .plot import plot_store

__all__ = ["EXIT_CODES", "cli", "main", "plot_store", "reference_markdown", "storage_options"]
