"""Scheduler rules: treatment plans (`plans`) and free slots in a site's rooms (`slots`).

Pure: the standard library, pydantic and the contract vocabulary only; no I/O, no clock.
"""
