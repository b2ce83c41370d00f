"""Helpers the tests share: one home each, so no test module imports another."""
