"""Type stub for the Cython wire engine; checked against the module by ``mypy.stubtest``."""

from collections.abc import Sequence
from typing import Any, final

__all__ = ["Frame", "FrameDecoder", "encode_frame"]

@final
class Frame:
    msg_type: int
    flags: int
    seq: int
    object_id: str
    method: str
    payload: bytes | memoryview
    buffers: list[Any]
    mac: bytes
    head: bytes
    def __init__(
        self,
        msg_type: int,
        *,
        flags: int = 0,
        seq: int = 0,
        object_id: str = "",
        method: str = "",
        payload: Any = b"",
        buffers: Sequence[Any] = (),
        mac: bytes = b"",
        head: bytes = b"",
    ) -> None: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

def encode_frame(
    msg_type: int,
    *,
    flags: int = 0,
    seq: int = 0,
    object_id: str = "",
    method: str = "",
    payload: Any = b"",
    buffers: Sequence[Any] = (),
    mac_size: int = 0,
) -> list[Any]: ...

@final
class FrameDecoder:
    def __init__(self, *, max_message_size: int = ...) -> None: ...
    @property
    def max_message_size(self) -> int: ...
    @max_message_size.setter
    def max_message_size(self, value: int) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: Any) -> list[Frame]: ...
    def get_buffer(self, sizehint: int = -1) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> list[Frame]: ...

def _constants() -> dict[str, Any]: ...
