"""The one base class of the errors that are the user's to fix (arguments, data, models, storage,
the cluster to join): the CLI shows them as one line with no traceback, and an API caller can
catch them all as ``raydenoise.RaydenoiseError``. Anything else is a bug of ours."""

from __future__ import annotations


class RaydenoiseError(Exception):
    """A mistake in what the user gave, or a failure of it (storage, cluster): the message says
    what and where."""
