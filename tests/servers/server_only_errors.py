"""An exception class only the server process can import (the test client cannot)."""


class SecretError(Exception):
    """Raised by the subprocess server; the client has no module to unpickle it with."""
