"""Sizes as people read them: one function, used by the menu and by both servers' pages.

``human_size(209715200)`` is ``'200.0 MiB'``: binary units (KiB = 1024 bytes), one
decimal from KiB up, whole bytes below.
"""

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(n):
    for unit in SIZE_UNITS:
        if n < 1024 or unit == SIZE_UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
