"""The server-side object of the mobile-code tests (importable in worker processes).

It reports what happened on the server through return values: which process ran the call,
which modules that process has, and what its code validator was asked.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from proc_objects import wait_for_file

from pyroact.core import DynamicProxy, ObjBase
from pyroact.mobile import accept_all, allow_modules


class Shop(ObjBase):
    """Takes mobile objects (uploads) and makes server-only ones (downloads).

    Args:
        validator: ``"none"`` (the default deny), ``"accept"`` (``accept_all``), ``"record"``
            (accepts and records every question), or ``"allow:PATTERN[,PATTERN...]"``
            (``allow_modules``).
    """

    def __init__(self, validator: str = "none") -> None:
        ObjBase.__init__(self)
        self.questions: list[tuple[str, str | None, Any]] = []
        self.kept: Any = None
        if validator == "accept":
            self.setCodeValidator(accept_all)
        elif validator == "record":
            self.setCodeValidator(self._record)
        elif validator.startswith("allow:"):
            self.setCodeValidator(allow_modules(*validator[len("allow:") :].split(",")))
        elif validator != "none":
            raise ValueError(f"unknown validator {validator!r}")

    def _record(self, name: str, source: str | None, address: Any) -> bool:
        self.questions.append((name, source, address))
        return True

    def validator_questions(self) -> list[tuple[str, str | None, Any]]:
        return list(self.questions)

    def describe(self, agent: Any) -> dict[str, Any]:
        """Run the mobile object's code here."""
        return {"pid": os.getpid(), "text": agent.describe(), "module": type(agent).__module__}

    def has_modules(self, *names: str) -> list[bool]:
        return [name in sys.modules for name in names]

    def pid(self) -> int:
        return os.getpid()

    def keep(self, agent: Any) -> None:
        self.kept = agent

    def kept_text(self) -> Any:
        return None if self.kept is None else self.kept.describe()

    def pass_on(self, uri: str, agent: Any) -> dict[str, Any]:
        """Hand a mobile object to another server (which may need its code from here)."""
        with DynamicProxy(uri) as other:
            return dict(other.describe(agent))

    def make(self, module: str, cls: str, *args: Any) -> Any:
        """An instance of a class only the server has."""
        return getattr(importlib.import_module(module), cls)(*args)

    def hold(self, started: str, release: str, timeout: float = 30.0) -> int:
        """Keep this worker busy: create ``started``, wait for ``release`` to exist."""
        Path(started).touch()
        wait_for_file(release, timeout)
        return os.getpid()
