"""The server's proxies by name: create, replace (populate), remove, reset, with Toxiproxy's errors."""

from __future__ import annotations

import random

from regions.toxiproxy.api_error import PROXY_ALREADY_EXISTS, PROXY_NOT_FOUND, ApiError
from regions.toxiproxy.api_json import ProxyInput
from regions.toxiproxy.proxy import Proxy


class ProxyCollection:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._proxies: dict[str, Proxy] = {}

    def all(self) -> list[Proxy]:
        return list(self._proxies.values())

    def get(self, name: str) -> Proxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    def _new(self, config: ProxyInput) -> Proxy:
        return Proxy(config, random.Random(self._rng.getrandbits(64)))

    async def add(self, config: ProxyInput) -> Proxy:
        if config.name in self._proxies:
            raise PROXY_ALREADY_EXISTS
        proxy = self._new(config)
        if config.enabled:
            await proxy.start()
        self._proxies[proxy.name] = proxy
        return proxy

    async def add_or_replace(self, config: ProxyInput) -> Proxy:
        """An existing proxy with the same listen and upstream is kept as it is (toxics, enabled and all)."""
        existing = self._proxies.get(config.name)
        if existing is not None:
            if not await existing.differs(config):
                return existing
            await existing.stop()
        proxy = self._new(config)
        if config.enabled:
            await proxy.start()
        self._proxies[proxy.name] = proxy
        return proxy

    async def populate(self, configs: list[ProxyInput]) -> tuple[list[Proxy], ApiError | None]:
        """Stops at the first failure and reports the proxies done so far with it, as Toxiproxy does."""
        done: list[Proxy] = []
        for config in configs:
            try:
                done.append(await self.add_or_replace(config))
            except ApiError as error:
                return done, error
        return done, None

    async def remove(self, name: str) -> None:
        await self.get(name).stop()
        del self._proxies[name]

    async def reset(self) -> None:
        for proxy in self.all():
            await proxy.start()
            proxy.toxics.reset()

    async def clear(self) -> None:
        for name in list(self._proxies):
            await self.remove(name)
