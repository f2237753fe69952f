"""Attribute proxies and the nested-attribute semantics of the seed chapter (issue 3)."""

from __future__ import annotations

import pytest
from remote_objects import Echo

from pyroact.core import Daemon, DynamicProxy, getAttrProxyForURI


def test_get_and_set_remote_attributes(daemon: Daemon) -> None:
    obj = Echo()
    proxy = getAttrProxyForURI(daemon.connect(obj))
    assert proxy.value == 0
    proxy.value = 5
    assert obj.value == 5
    assert proxy.value == 5
    proxy.brand_new = "created"
    assert obj.brand_new == "created"  # type: ignore[attr-defined]
    assert proxy.add(2, 3) == 5
    proxy._release()


def test_nested_attribute_changes_stay_local(daemon: Daemon) -> None:
    obj = Echo()
    proxy = getAttrProxyForURI(daemon.connect(obj))
    sub = proxy.sub
    assert sub.x == 1
    proxy.sub.x = 99  # changes a temporary local copy
    assert obj.sub.x == 1
    assert proxy.sub.x == 1
    assert proxy.sub.bump() == 2  # runs on the local copy too
    assert obj.sub.x == 1
    proxy._release()


def test_missing_attribute_is_an_attributeerror(daemon: Daemon) -> None:
    proxy = getAttrProxyForURI(daemon.connect(Echo()))
    with pytest.raises(AttributeError, match="nonexist"):
        proxy.nonexist  # noqa: B018
    assert proxy.value == 0
    proxy._release()


def test_setting_a_method_through_an_attribute_proxy_is_refused(daemon: Daemon) -> None:
    obj = Echo()
    proxy = getAttrProxyForURI(daemon.connect(obj))
    assert proxy.echo(1) == 1
    with pytest.raises(AttributeError):
        proxy.echo = 5
    assert proxy.echo(2) == 2
    proxy._release()


def test_attribute_access_on_a_regular_proxy_fails_clearly(daemon: Daemon) -> None:
    obj = Echo()
    proxy = DynamicProxy(daemon.connect(obj))
    with pytest.raises(AttributeError, match="DynamicProxyWithAttrs"):
        proxy.value = 3
    assert obj.value == 0
    stub = proxy.value
    assert "attribute" in repr(stub) and "DynamicProxyWithAttrs" in repr(stub)
    with pytest.raises(TypeError):
        stub()  # the remote 'value' is an int, not a method
    assert proxy.adapter.channel is not None
    proxy._release()
