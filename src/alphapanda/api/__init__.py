"""The control API and the live status page (FastAPI), with a Redis-shared rate limit.

``create_app`` builds the app against a ``FeedControl`` (the running feed) or none (the
read-only monitoring API of ``alphapanda api``); ``serve_api`` serves it inside a
``TaskGroup`` with graceful shutdown. In the feed process ``alphapanda.assembly.build``
wraps the feed's parts in a ``ServiceControl`` and runs an ``ApiServer`` over it beside
the pipeline (``Overrides(api=True)``).
"""

from alphapanda.api.app import create_app
from alphapanda.api.control import FeedControl, ServiceControl
from alphapanda.api.server import ApiServer, serve_api

__all__ = ["ApiServer", "FeedControl", "ServiceControl", "create_app", "serve_api"]
