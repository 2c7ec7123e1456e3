"""The control API and the live status page (FastAPI), with a Redis-shared rate limit.

``create_app`` builds the app against a ``FeedControl`` (the running feed) or none (the
read-only monitoring API of ``alphapanda api``); ``serve_api`` serves it inside a
``TaskGroup`` with graceful shutdown. In the feed process::

    control = ServiceControl(service)
    service.attach(PipelineMetricsCollector(settings, control.metrics_sources()))
    service.attach(ApiServer(settings, control))
"""

from alphapanda.api.app import create_app
from alphapanda.api.control import FeedControl, ServiceControl
from alphapanda.api.server import ApiServer, serve_api

__all__ = ["ApiServer", "FeedControl", "ServiceControl", "create_app", "serve_api"]
