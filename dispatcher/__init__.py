"""Rate-limited bulk SMS dispatcher for the Sinch SMS REST API."""
