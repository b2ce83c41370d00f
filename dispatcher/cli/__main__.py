"""``python -m dispatcher.cli``, as the tests and the demo run it."""

from dispatcher.cli import main

main()
