"""Transferring proxies over remote calls, as arguments and as results.

A proxy is pickled with its URI and settings and arrives unconnected; the thread that uses it
on the other side connects it. A server-created (transient) object is connected to the
daemon with ``self.getDaemon().connect(obj)`` and returned as ``obj.getProxy()``.
"""

from __future__ import annotations

import pickle
import threading

import pyroact.core


class Account(pyroact.core.ObjBase):
    def __init__(self, owner: str) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.owner = owner
        self.balance = 0

    def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance


class Bank(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        self.accounts: dict[str, pyroact.core.DynamicProxy] = {}

    def open(self, owner: str) -> pyroact.core.DynamicProxy:
        account = Account(owner)
        daemon = self.getDaemon()
        assert daemon is not None
        daemon.connect(account)  # a transient object: no name
        return account.getProxy()  # the client receives a proxy, not a copy

    def transfer(
        self, source: pyroact.core.DynamicProxy, target: pyroact.core.DynamicProxy, amount: int
    ) -> tuple[int, int]:
        # The proxies arrived as arguments; this thread uses them directly.
        return source.deposit(-amount), target.deposit(amount)


def main() -> None:
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    uri = daemon.connect(Bank(), "bank")
    loop = threading.Thread(target=daemon.requestLoop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    try:
        bank = pyroact.core.getProxyForURI(uri)
        alice = bank.open("alice")
        bob = bank.open("bob")
        print("got a proxy back:", type(alice).__name__, alice.URI.protocol)
        print("alice deposits 100, balance:", alice.deposit(100))
        print("transfer 30 alice -> bob, balances:", bank.transfer(alice, bob, 30))
        copy = pickle.loads(pickle.dumps(alice))
        print("unpickled proxy equals original:", copy == alice, "balance:", copy.deposit(0))
        for p in (bank, alice, bob, copy):
            p._release()
    finally:
        daemon.shutdown()
        loop.join(5)
        daemon.closedown()
    print("proxies_over_calls done")


if __name__ == "__main__":
    main()
