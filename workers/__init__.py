"""The Celery app: ``celery -A workers worker`` is the whole runtime."""

from workers.app import app

__all__ = ["app"]
