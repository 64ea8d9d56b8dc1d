"""`python -m bench`: run every benchmark and print its figures."""

from bench import rules

rules.main()
