"""Moved to ``deepdock.api.models`` (shared with the client); this re-export goes when the routers are redone."""

from deepdock.api.models import *  # noqa: F403
from deepdock.api.models import __all__ as __all__
