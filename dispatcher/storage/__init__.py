"""The only code that knows the Redis layout: key names, hash fields, the Lua scripts and
their typed wrappers, and every plain read or write outside the scripts.

Everything above this package (the facade, the send loop, the ticker, the exporter) speaks in
plan ids, batch ids and typed answers, so the layout can change here without a caller noticing.
"""
