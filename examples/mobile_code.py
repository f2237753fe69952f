"""Mobile code: a module travels, as source, to the process that lacks it.

The server runs in a child process (this script with ``--server DIR``). It has the module
``goods`` (in DIR) that the client lacks, and lacks the ``agents`` package that only the
client has (both are written into temporary folders first). ``PYRO_MOBILE_CODE`` is on in
both processes:

* upload: the client passes an ``agents.buyer.Buyer``; the server asks for its module, and the
  client sends the source of ``agents.buyer`` and of ``agents.haggle`` (which it imports at
  module level). The shop's code validator allows ``agents.*`` only.
* download: the shop returns a ``goods.Basket``; the client fetches the source of ``goods``.
* an object without a code validator denies mobile code: that is the default.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyroact
import pyroact.core
import pyroact.mobile
from pyroact.errors import PyroError

CLIENT_ONLY = {
    "agents/__init__.py": "",
    "agents/haggle.py": """
        def offer(price):
            return price - 1  # always try a little less
        """,
    "agents/buyer.py": """
        from agents.haggle import offer

        class Buyer:
            def __init__(self, budget):
                self.budget = budget

            def shop(self, prices):
                bought, spent = [], 0
                for item, price in sorted(prices.items()):
                    if spent + offer(price) <= self.budget:
                        bought.append(item)
                        spent += offer(price)
                return bought, spent
        """,
}
SERVER_ONLY = {
    "goods.py": """
        class Basket:
            def __init__(self, items):
                self.items = dict(items)

            def total(self):
                return sum(self.items.values())
        """,
}
PRICES = {"apple": 3, "pear": 4, "plum": 2}


def write_modules(folder: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")


class Shop(pyroact.core.ObjBase):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)
        # Uploads of the agents package, downloads of goods; everything else is denied.
        self.setCodeValidator(pyroact.mobile.allow_modules("agents.*", "goods"))

    def visit(self, buyer: object) -> object:
        return buyer.shop(PRICES)  # type: ignore[attr-defined]  # runs the uploaded code

    def basket(self) -> object:
        import goods  # type: ignore[import-not-found]  # a module only the server has

        return goods.Basket(PRICES)


class StrictShop(Shop):
    def __init__(self) -> None:
        pyroact.core.ObjBase.__init__(self)  # no code validator: mobile code is denied


def run_server(folder: str) -> None:
    sys.path.insert(0, folder)
    pyroact.config.PYRO_MOBILE_CODE = True  # server: accept uploads (as the validator allows)
    daemon = pyroact.core.Daemon(host="127.0.0.1", port=0)
    print(daemon.connect(Shop(), "shop"), flush=True)  # tells the parent it is ready
    print(daemon.connect(StrictShop(), "strict"), flush=True)
    try:
        daemon.requestLoop(timeout=0.1)
    finally:
        daemon.closedown()


def main() -> None:
    with tempfile.TemporaryDirectory() as client_dir, tempfile.TemporaryDirectory() as server_dir:
        write_modules(Path(client_dir), CLIENT_ONLY)
        write_modules(Path(server_dir), SERVER_ONLY)
        server = subprocess.Popen(
            [sys.executable, __file__, "--server", server_dir], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            shop_uri, strict_uri = server.stdout.readline(), server.stdout.readline()
            sys.path.insert(0, client_dir)  # the agents package exists here only
            from agents.buyer import Buyer  # type: ignore[import-not-found]

            pyroact.config.PYRO_MOBILE_CODE = True  # client: allow downloads
            with pyroact.core.getProxyForURI(strict_uri.strip()) as strict:
                try:
                    strict.visit(Buyer(budget=5))
                except PyroError as exc:
                    print("without a code validator:", str(exc).split(":")[0])
            with pyroact.core.getProxyForURI(shop_uri.strip()) as shop:
                bought, spent = shop.visit(Buyer(budget=5))
                print(f"server ran the uploaded agent: bought {bought} for {spent}")
                basket = shop.basket()
                print(
                    f"downloaded {type(basket).__module__}.{type(basket).__name__} "
                    f"from the server: total {basket.total()}"
                )
            # Modules are installed for the whole server process: now the strict shop has it.
            with pyroact.core.getProxyForURI(strict_uri.strip()) as strict:
                print("strict shop, module already there:", strict.visit(Buyer(budget=3)))
        finally:
            server.kill()
            server.wait(10)
            if server.stdout is not None:
                server.stdout.close()
    print("mobile_code done")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        run_server(sys.argv[2])
    else:
        main()
