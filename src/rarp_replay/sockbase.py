"""What every socket adapter of the package shares: an owned socket, closed once."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Self


class OwnedSocket:
    """Holds `_sock`; gives `fileno()` for poll(), `close()`, and `with` support."""

    _sock: socket.socket

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
