"""The worker side: the drain loop, the policy table, the ticker, the per-process runtime and the
Celery app factory.  It depends on storage/ and sinch/, never the other way round."""
