"""Sinch callbacks in: delivery reports and inbound messages (STOP), received over HTTP.

``dispatcher callbacks --port N`` serves :func:`wsgi_app`; mount :func:`wsgi_app` or
:func:`asgi_app` in your own web stack instead (both read the settings from the environment,
as the worker does).  Each plan has one URL, ``<callback_base_url>/callbacks/<plan>/<token>``,
whose token only a holder of ``DISPATCH_CALLBACK_SECRET`` can compute or check.
"""

from __future__ import annotations

from dispatcher.callbacks.app import asgi_app, make_wsgi_app, wsgi_app

__all__ = ["asgi_app", "make_wsgi_app", "wsgi_app"]
