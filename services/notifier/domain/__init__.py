"""Notifier rules: the aftercare step table (`timeline`) and the texts it sends (`catalogue`).

Pure: the standard library, pydantic and the shared contract only; no I/O, no clock.
"""
