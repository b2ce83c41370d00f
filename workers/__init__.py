"""``celery -A workers worker`` finds the dispatcher's Celery app here.

A shim and nothing more: the app is built by ``dispatcher.sending.app.create_app``, which reads
no settings and changes nothing in the process at import (see its docstring).
"""

from dispatcher.sending.app import create_app

app = create_app()

__all__ = ["app"]
