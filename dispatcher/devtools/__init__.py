"""The demo and the throwaway local Redis: for trying the product and for its tests, not used by
the runtime."""
