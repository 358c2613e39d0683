"""Deprecated: the PROXY protocol's parser is public as ``netloop.proxy_protocol``; this name stays one release.

The very same module under its old name (private names included), so code that imported from here keeps working.
"""

import sys

from netloop import _proxy_parse, proxy_protocol

for _name in dir(_proxy_parse):
    if not hasattr(proxy_protocol, _name):
        setattr(proxy_protocol, _name, getattr(_proxy_parse, _name))
sys.modules[__name__] = proxy_protocol
