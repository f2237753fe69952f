"""The frame layout: the one source of truth for both wire engines (layer 0).

How it works
------------
Every message on a pyroact connection is one *frame*: a fixed 24-byte header, a variable
*head* (the out-of-band buffer length table, the object id and the method name), the pickle
*payload*, the out-of-band *buffers*, and an optional *MAC* trailer. All integers are big-endian.

Fixed header (``HEADER_STRUCT`` = ``!4sHBBHHIIHH``)::

    offset  size  field          meaning
    ------  ----  -------------  ---------------------------------------------------------
       0     4    magic          b"PRAC" (Pyro 3 sends b"PYRO", Pyro 4/5 b"PYRO" too)
       4     2    version        PROTOCOL_VERSION (u16); any other value fails fast
       6     1    msg_type       one of the MSG_* numbers below (u8)
       7     1    objid_len      length of the object id in bytes (u8, ASCII)
       8     2    flags          FLAG_* bits (u16); unknown bits are a protocol error
      10     2    method_len     length of the method name in bytes (u16, UTF-8)
      12     4    seq            sequence id (u32); a reply carries its request's seq
      16     4    payload_len    length of the pickle payload in bytes (u32)
      20     2    nbuffers       number of out-of-band buffers (u16, at most MAX_BUFFERS)
      22     2    mac_len        length of the MAC trailer (0 or MAC_SIZE)

Variable part, in this order::

    nbuffers x u64   the length of each out-of-band buffer (BUFLEN_STRUCT)
    objid_len        object id (ASCII)
    method_len       method name (UTF-8)
    payload_len      pickle protocol-5 payload (or raw bytes for handshake messages)
    sum(buffers)     the out-of-band buffers, back to back
    mac_len          HMAC-SHA256 over a per-direction counter and every byte before it

Routing needs only the head, so a server can check the object id, the method name and the size
limit before it touches a byte of pickle. The size limit (payload plus buffers) is checked
twice before any of the body is buffered: on the fixed header for the payload, and again once
the buffer table is known.

Handshake messages (CHALLENGE, CONNECT, GRANTED, DENIED) carry plain bytes in the payload,
never pickle; :mod:`pyroact._connection` gives their contents.
"""

from __future__ import annotations

import struct
from typing import Final

MAGIC: Final = b"PRAC"
PROTOCOL_VERSION: Final = 1

HEADER_STRUCT: Final = struct.Struct("!4sHBBHHIIHH")
HEADER_SIZE: Final = HEADER_STRUCT.size
BUFLEN_STRUCT: Final = struct.Struct("!Q")
BUFLEN_SIZE: Final = BUFLEN_STRUCT.size

# Message types.
MSG_CHALLENGE: Final = 1  # server -> client: nonce and whether identification is required
MSG_CONNECT: Final = 2  # client -> server: client nonce and authentication token
MSG_GRANTED: Final = 3  # server -> client: the server's proof
MSG_DENIED: Final = 4  # server -> client: reason code and text; the server then closes
MSG_REQUEST: Final = 5  # a call that expects a reply
MSG_ONEWAY: Final = 6  # a call that gets no reply at all
MSG_REPLY: Final = 7  # the result of a request
MSG_EXCEPTION: Final = 8  # the exception a request raised
MSG_CLOSE: Final = 9  # orderly close, either direction
MSG_TYPES: Final = frozenset(range(MSG_CHALLENGE, MSG_CLOSE + 1))
MSG_NAMES: Final = {
    MSG_CHALLENGE: "CHALLENGE",
    MSG_CONNECT: "CONNECT",
    MSG_GRANTED: "GRANTED",
    MSG_DENIED: "DENIED",
    MSG_REQUEST: "REQUEST",
    MSG_ONEWAY: "ONEWAY",
    MSG_REPLY: "REPLY",
    MSG_EXCEPTION: "EXCEPTION",
    MSG_CLOSE: "CLOSE",
}

# Flag bits.
FLAG_COMPRESSED: Final = 0x0001  # payload is zlib-compressed (only after authentication)
FLAG_BATCH: Final = 0x0002  # payload is a list of calls (reserved for batch calls)
FLAG_CLOUDPICKLE: Final = 0x0004  # payload needed cloudpickle (informational)
FLAG_STATELOST: Final = 0x0008  # reply: the object was re-created and lost its state
FLAGS_KNOWN: Final = FLAG_COMPRESSED | FLAG_BATCH | FLAG_CLOUDPICKLE | FLAG_STATELOST

MAX_OBJID_LEN: Final = 255
MAX_METHOD_LEN: Final = 1024
MAX_BUFFERS: Final = 4096
MAC_SIZE: Final = 32
MAX_SEQ: Final = 0xFFFFFFFF
MAX_PAYLOAD_LEN: Final = 0xFFFFFFFF

DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 30

# Frames whose body (everything after the fixed header) is at least this large get a buffer of
# their own, so that the payload and buffers can be handed out as views without a copy and the
# socket can receive straight into their final place.
LARGE_FRAME_THRESHOLD: Final = 64 * 1024
# Below this size an encoder joins the payload into the header segment: one small write beats a
# scatter list.
JOIN_PAYLOAD_THRESHOLD: Final = 16 * 1024
# Initial capacity of a decoder's receive buffer. Small, because every connection has one (an
# idle connection costs little more than this); it grows, by doubling, for bigger small frames.
RECV_BUFFER_SIZE: Final = 16 * 1024
