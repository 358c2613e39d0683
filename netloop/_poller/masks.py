"""Event masks, with epoll's bit values on every poller: the loop dispatches what a poller returns untranslated.

A module of its own so that each poller can take them without importing the package that picks a poller.
"""

IN = 0x001
OUT = 0x004
ERR = 0x008
HUP = 0x010
EDGE = 1 << 31
# Any of these means "try to read": a read then reports the data, the EOF or the error.
READABLE = IN | ERR | HUP
