"""Scenarios, their contenders, and plug-in modules.

Built-in scenarios and baseline contenders come from
:func:`benches.baselines.register`. Any module in the ``benches`` package
whose name starts with ``fabric_`` is a plug-in: it is imported and its
``register(registry)`` function is called, where it may add contenders to
existing scenarios or add scenarios of its own::

    # benches/fabric_dbpool.py
    from benches.registry import Registry

    def register(registry: Registry) -> None:
        registry.add_contender("pg-select1", FabricDbpoolContender)

A contender factory is called with the suite's
:class:`~benches.env.BenchEnv` (shared PostgreSQL cluster, PgBouncer,
MariaDB user, echo server) and returns a :class:`~benches.harness.Contender`.
A plug-in that fails to import is recorded in ``plugin_errors`` (and in the
report's notes) instead of stopping the suite.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benches.errors import BenchError, UnknownScenario
from benches.model import Profile

if TYPE_CHECKING:
    from benches.env import BenchEnv
    from benches.harness import Contender

__all__ = ["ContenderFactory", "Registry", "Scenario", "default_registry"]

ContenderFactory = Callable[["BenchEnv"], "Contender"]


@dataclass
class Scenario:
    """One job done by several contenders, compared against ``baseline``."""

    name: str
    title: str
    description: str
    baseline: str
    factories: list[ContenderFactory] = field(default_factory=list)
    levels: tuple[int, ...] | None = None
    max_concurrency: int | None = None

    def levels_for(self, profile: Profile) -> list[int]:
        """The profile's levels (or the scenario's own), capped by ``max_concurrency``."""
        levels = self.levels or profile.levels
        cap = self.max_concurrency
        return [level for level in levels if cap is None or level <= cap]


class Registry:
    """Named scenarios in registration order."""

    def __init__(self) -> None:
        self._scenarios: dict[str, Scenario] = {}
        self.plugin_errors: list[str] = []
        self.plugins: list[str] = []

    def add_scenario(
        self,
        name: str,
        *,
        title: str,
        description: str,
        baseline: str,
        levels: tuple[int, ...] | None = None,
        max_concurrency: int | None = None,
    ) -> Scenario:
        if name in self._scenarios:
            raise BenchError(f"scenario {name!r} is already registered")
        scenario = Scenario(
            name=name,
            title=title,
            description=description,
            baseline=baseline,
            levels=levels,
            max_concurrency=max_concurrency,
        )
        self._scenarios[name] = scenario
        return scenario

    def add_contender(self, scenario: str, factory: ContenderFactory) -> None:
        try:
            self._scenarios[scenario].factories.append(factory)
        except KeyError:
            raise UnknownScenario(f"no scenario named {scenario!r}") from None

    def get(self, name: str) -> Scenario:
        try:
            return self._scenarios[name]
        except KeyError:
            raise UnknownScenario(
                f"no scenario named {name!r} (have: {', '.join(self._scenarios)})"
            ) from None

    @property
    def scenarios(self) -> list[Scenario]:
        return list(self._scenarios.values())

    def select(self, patterns: Sequence[str] | None = None) -> list[Scenario]:
        """Scenarios matching any of the names or shell patterns (all when empty)."""
        if not patterns:
            return self.scenarios
        chosen: list[Scenario] = []
        for pattern in patterns:
            matches = [s for s in self._scenarios.values() if fnmatch.fnmatchcase(s.name, pattern)]
            if not matches:
                self.get(pattern)  # raises UnknownScenario with the list of names
            chosen.extend(s for s in matches if s not in chosen)
        return chosen

    def load_plugins(self, package: str = "benches", prefix: str = "fabric_") -> None:
        """Import ``<package>.<prefix>*`` modules and call their ``register(self)``."""
        module = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
            if not info.name.startswith(prefix):
                continue
            qualified = f"{package}.{info.name}"
            try:
                plugin = importlib.import_module(qualified)
                register = getattr(plugin, "register", None)
                if register is None:
                    raise BenchError("has no register(registry) function")
                register(self)
            except Exception as exc:
                self.plugin_errors.append(f"plug-in {qualified} not loaded: {exc!r}")
            else:
                self.plugins.append(qualified)

    def __repr__(self) -> str:
        return f"<Registry scenarios={len(self._scenarios)} plugins={len(self.plugins)}>"


def default_registry(*, plugins: bool = True) -> Registry:
    """The built-in scenarios and baselines, plus every ``benches.fabric_*`` plug-in."""
    from benches.baselines import register

    registry = Registry()
    register(registry)
    if plugins:
        registry.load_plugins()
    return registry
