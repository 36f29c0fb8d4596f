"""The agent interface and the registry agents join by themselves.

``ask()`` proposes a Candidate (None when it has nothing more to try), ``tell(candidate, result)`` reports
what evaluating it gave. An agent's next proposal must depend only on its seed and the results told so far
(not on how often ``ask`` was called): a resumed run tells it the stored results and continues the sequence
without re-measuring them.

A new agent is one module that calls ``register``: every module of this package is imported when agents
are first looked up, and so is every Python entry point in the group ``edgeprune.agents`` (a plug-in
package declares ``myagent = "mypkg.agent"``, a module that calls ``register``, or
``myagent = "mypkg.agent:factory"``, a factory registered under the entry point's name).

A factory is called as ``factory(space, *, budget, seed, latency_ratio, **options)``; the options it takes
are its keyword-only parameters, and an option it does not take is an error (``check_agent`` says so
before any search space exists).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import types
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Protocol, runtime_checkable

from edgeprune.errors import EdgePruneError
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult

ENTRY_POINT_GROUP = "edgeprune.agents"
# Passed by make_agent to every factory; not options.
STANDARD_ARGS = ("budget", "seed", "latency_ratio")


@runtime_checkable
class Agent(Protocol):
    """What the pipeline uses of an agent."""

    name: str  # the registered name (shown in the report)
    batch: int  # candidates proposed at once (measured in parallel when there are several devices); 1 if sequential
    constraint: str  # "latency" or "macs": the constraint the agent's own feasibility uses

    def ask(self) -> Candidate | None: ...

    def tell(self, candidate: Candidate, result: EvalResult) -> None: ...

    def feasible(self, result: EvalResult) -> bool:
        """Whether ``result`` meets the target by this agent's constraint (ranks the final choice)."""
        ...

    def describe(self) -> dict:
        """JSON-able facts about the search (clusters, phase switches) for the run report."""
        ...


class BaseAgent:
    """The defaults of a sequential agent constrained by measured latency. Subclasses set ``name`` and
    define ``ask`` and ``tell``."""

    name: str = ""
    batch: int = 1
    constraint: str = "latency"

    def feasible(self, result: EvalResult) -> bool:
        return bool(result.feasible)

    def describe(self) -> dict:
        return {}


AgentFactory = Callable[..., Agent]


class _Registry(Mapping):
    """Registered factories by name; looking one up discovers the agent modules and plug-ins first."""

    def __init__(self) -> None:
        self._factories: dict[str, AgentFactory] = {}

    def __getitem__(self, name: str) -> AgentFactory:
        discover()
        return self._factories[name]

    def __iter__(self) -> Iterator[str]:
        discover()
        return iter(dict(self._factories))

    def __len__(self) -> int:
        discover()
        return len(self._factories)

    def __repr__(self) -> str:
        return f"AGENTS({sorted(self)})"


AGENTS = _Registry()
_discovery = {"done": False, "running": False}


def _where(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def register(name: str):
    """Decorator: register a factory (or an agent class) under ``name``."""

    def deco(factory: AgentFactory) -> AgentFactory:
        if not callable(factory):
            raise EdgePruneError(f"agent {name!r}: {factory!r} is not callable")
        try:
            inspect.signature(factory).bind(None, budget=1, seed=0, latency_ratio=0.5)
        except (TypeError, ValueError):
            raise EdgePruneError(f"agent {name!r}: {_where(factory)} must take "
                                 f"(space, *, budget, seed, latency_ratio, <options>)") from None
        old = AGENTS._factories.get(name)
        # Re-importing the same module registers the same factory again: that is no conflict.
        if old is not None and _where(old) != _where(factory):
            raise EdgePruneError(f"agent {name!r} is registered twice: by {_where(old)} and by {_where(factory)}")
        AGENTS._factories[name] = factory
        return factory

    return deco


def discover() -> None:
    """Import every module of this package and every ``edgeprune.agents`` entry point, once."""
    if _discovery["done"] or _discovery["running"]:
        return
    _discovery["running"] = True
    try:
        package = importlib.import_module(__package__)
        for mod in pkgutil.iter_modules(package.__path__):
            if mod.name != "base" and not mod.name.startswith("_"):
                importlib.import_module(f"{__package__}.{mod.name}")
        seen = set()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if (ep.name, ep.value) not in seen:  # a distribution found twice on sys.path lists it twice
                seen.add((ep.name, ep.value))
                _load_plugin(ep)
        _discovery["done"] = True
    finally:
        _discovery["running"] = False


def reset_discovery() -> None:
    """Forget that discovery ran (the next look-up scans the entry points again). Registered agents stay."""
    _discovery["done"] = False


def _load_plugin(ep: importlib.metadata.EntryPoint) -> None:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    what = f"agent plug-in {ep.name!r} ({ep.value}{f', from {dist}' if dist else ''})"
    try:
        obj = ep.load()
        if isinstance(obj, types.ModuleType):
            if not any(getattr(f, "__module__", None) == obj.__name__ for f in AGENTS._factories.values()):
                raise EdgePruneError("the module registered no agent (it must call "
                                     "edgeprune.search.agents.register)")
        else:
            register(ep.name)(obj)
    except Exception as e:  # noqa: BLE001 - any failure of third-party code is reported as the plug-in's
        detail = str(e) if isinstance(e, EdgePruneError) else f"{type(e).__name__}: {e}"
        raise EdgePruneError(f"{what} failed to load: {detail}") from e


def _factory(name: str) -> AgentFactory:
    try:
        return AGENTS[name]
    except KeyError:
        raise EdgePruneError(f"unknown agent {name!r}; available: {', '.join(sorted(AGENTS))}") from None


def agent_options(name: str) -> tuple[str, ...] | None:
    """The options agent ``name`` takes (None: any, its factory takes ``**kwargs``)."""
    params = list(inspect.signature(_factory(name)).parameters.values())[1:]  # the first is the space
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in STANDARD_ARGS)


def check_agent(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Raise EdgePruneError unless ``name`` is a registered agent that takes every option in ``options``.
    Needs no search space, so a run can refuse a wrong command line before measuring anything."""
    options = options or {}
    taken = agent_options(name)
    reserved = [k for k in options if k in STANDARD_ARGS]
    if reserved:
        verb = "is" if len(reserved) == 1 else "are"
        raise EdgePruneError(f"agent {name!r}: {', '.join(map(repr, reserved))} {verb} set by the run, not options")
    bad = [k for k in options if taken is not None and k not in taken]
    if bad:
        noun = "option" if len(bad) == 1 else "options"
        takes = f"it takes: {', '.join(taken)}" if taken else "it takes none"
        raise EdgePruneError(f"agent {name!r} takes no {noun} {', '.join(map(repr, bad))} ({takes})")


def missing_members(agent: Any) -> list[str]:
    """The members of the Agent protocol that ``agent`` lacks."""
    members = ("name", "batch", "constraint", "ask", "tell", "feasible", "describe")
    return [m for m in members if not hasattr(agent, m)]


def make_agent(name: str, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, **options) -> Agent:
    """Build agent ``name`` for ``space``. ``latency_ratio`` is the target as a fraction of the baseline;
    ``options`` (e.g. ``clusters``, ``batch``) must be ones the agent takes (see ``check_agent``)."""
    check_agent(name, options)
    agent = _factory(name)(space, budget=budget, seed=seed, latency_ratio=latency_ratio, **options)
    if missing := missing_members(agent):
        raise EdgePruneError(f"agent {name!r} ({_where(_factory(name))}) built a {type(agent).__name__} that "
                             f"lacks {', '.join(missing)} of the Agent protocol (subclass BaseAgent for defaults)")
    if agent.constraint not in ("latency", "macs"):
        raise EdgePruneError(f"agent {name!r}: constraint must be 'latency' or 'macs', not {agent.constraint!r}")
    return agent


def agent_info(agent: Agent) -> dict:
    """What an agent reports about itself (clusters, phase switches) for the run report."""
    return {"name": agent.name, **agent.describe()}
