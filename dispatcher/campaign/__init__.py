"""Enqueue-time work on a campaign, pure: no Redis, no HTTP, no process-level side effects.

Everything here is a function of its arguments, so the CLI's ``preview`` can run it without
a deployment, tests need no servers, and a caller's process is left as it was found (no
forks, no threads, no garbage-collector switches).  ``tests/test_campaign_purity.py`` keeps
it so.  Nothing is imported here: ``campaign.encoding`` should not pay for phonenumbers.
"""
