"""Public constants (layer 0: imports nothing from pyroact).

Pyro 3's names and values are kept where they still mean something; the wire-level numbers
live in :mod:`pyroact._wirespec`.
"""

from __future__ import annotations

from typing import Final

VERSION: Final = "0.1.0"
PYRO3_COMPAT_VERSION: Final = "3.16"

INTERNAL_DAEMON_GUID: Final = "c0000000011000001000000010000001"
NAMESERVER_NAME: Final = ":Pyro.NameServer"
EVENTSERVER_NAME: Final = ":Pyro.EventService"
TRACEBACK_ATTRIBUTE: Final = "remote_stacktrace"
# Mobile code: the most modules one call may supply (or one reply may retrieve), dependencies
# included; a bound on the round trips a call can cause.
MOBILE_CODE_MAX_MODULES: Final = 16

RIF_Varargs: Final = 1
RIF_Keywords: Final = 2
RIF_Oneway: Final = 4
RIF_VarargsAndKeywords: Final = RIF_Varargs | RIF_Keywords

DENIED_UNSPECIFIED: Final = 0
DENIED_SERVERTOOBUSY: Final = 1
DENIED_HOSTBLOCKED: Final = 2
DENIED_SECURITY: Final = 3
deniedReasons: Final = {
    DENIED_UNSPECIFIED: "unspecified reason",
    DENIED_SERVERTOOBUSY: "server too busy",
    DENIED_HOSTBLOCKED: "host blocked",
    DENIED_SECURITY: "security reasons",
}

CFGITEM_PYRO_INITIALIZED: Final = "_PYRO_INITIALIZED"

NSROLE_SINGLE: Final = 0
NSROLE_PRIMARY: Final = 1
NSROLE_SECONDARY: Final = 2
NS_SYSCMD_LOCATION: Final = b"location"
NS_SYSCMD_SHUTDOWN: Final = b"shutdown"

DEFAULT_PORT: Final = 7766
DEFAULT_NS_PORT: Final = 9090
DEFAULT_NS_BC_PORT: Final = 9090
