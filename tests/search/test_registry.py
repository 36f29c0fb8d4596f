"""The agent registry: agents join it by themselves (a module of the package or an entry-point plug-in),
every agent satisfies the declared protocol, and names and options are checked strictly."""

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest

from edgeprune.errors import EdgePruneError
from edgeprune.model.prune import PrunableGroup
from edgeprune.search.agents import (AGENTS, Agent, BaseAgent, agent_info, agent_options, check_agent, make_agent,
                                     register, reset_discovery)
from edgeprune.search.agents import base
from edgeprune.search.space import SearchSpace
from edgeprune.types import EvalResult, Measurement

SPACE = SearchSpace(tuple(PrunableGroup(f"g{i}", 32, (8, 16, 24, 32)) for i in range(3)), base_macs=100)
BUILT_IN = {"bo", "bo-plain", "bo-flops", "uniform", "random"}


def result(candidate, target=0.5):
    lat = float(np.mean([w / 32 for w in candidate.widths]) ** 2)
    m = Measurement(lat, lat, lat, lat, 0.0, 1, 0, 1, 1, "fake", "0", "test", lat, lat)
    return EvalResult(accuracy=lat, latency_ms=lat, measurement=m, macs=int(100 * lat), params=0,
                      feasible=lat <= target)


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry and a fresh discovery, both undone after the test."""
    base.discover()
    monkeypatch.setattr(base.AGENTS, "_factories", dict(base.AGENTS._factories))
    monkeypatch.setitem(base._discovery, "done", False)
    added = set(sys.modules)
    yield
    for name in set(sys.modules) - added:
        if name.startswith("my_agent"):
            del sys.modules[name]


def install_plugin(tmp_path, monkeypatch, module_source: str, entry_point: str, module="my_agent_mod"):
    """A plug-in distribution on sys.path: one module and its *.dist-info (what `pip install` would leave)."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / "my_agent_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-agent-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edgeprune.agents]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reset_discovery()


PLUGIN = """
    from edgeprune.search.agents import BaseAgent, register

    @register("myagent")
    class MyAgent(BaseAgent):
        name = "myagent"

        def __init__(self, space, *, budget, seed, latency_ratio, level: float = 0.5):
            self.space, self.level, self.told = space, level, 0

        def ask(self):
            return None if self.told else self.space.candidate([self.level] * self.space.dim, origin="mine")

        def tell(self, candidate, result):
            self.told += 1
"""


def test_a_plugin_module_adds_an_agent_with_no_other_file_touched(tmp_path, monkeypatch, isolated_registry):
    assert "myagent" not in AGENTS
    install_plugin(tmp_path, monkeypatch, PLUGIN, "myagent = my_agent_mod")
    assert "myagent" in AGENTS
    check_agent("myagent", {"level": 0.75})
    agent = make_agent("myagent", SPACE, budget=3, seed=0, latency_ratio=0.5, level=0.75)
    assert isinstance(agent, Agent) and agent.name == "myagent"
    assert (agent.batch, agent.constraint, agent.describe()) == (1, "latency", {})
    c = agent.ask()
    assert c.origin == "mine" and c.widths == (24, 24, 24)
    r = result(c, target=0.6)
    assert agent.feasible(r) is True and agent.feasible(result(c, target=0.1)) is False
    agent.tell(c, r)
    assert agent.ask() is None
    with pytest.raises(EdgePruneError, match=r"agent 'myagent' takes no option 'clusters' \(it takes: level\)"):
        check_agent("myagent", {"clusters": 3})


def test_a_plugin_entry_point_may_name_a_factory(tmp_path, monkeypatch, isolated_registry):
    source = """
        from edgeprune.search.agents.uniform import UniformAgent

        def make(space, *, budget, seed, latency_ratio):
            agent = UniformAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio)
            agent.name = "uniform2"
            return agent
    """
    install_plugin(tmp_path, monkeypatch, source, "uniform2 = my_agent_fac:make", module="my_agent_fac")
    agent = make_agent("uniform2", SPACE, budget=3, seed=0, latency_ratio=0.5)
    assert isinstance(agent, Agent) and agent_info(agent) == {"name": "uniform2"}
    assert agent_options("uniform2") == ()


def test_a_broken_plugin_is_named_in_a_clear_error(tmp_path, monkeypatch, isolated_registry):
    install_plugin(tmp_path, monkeypatch, "import no_such_module_xyz\n", "broken = my_agent_broken",
                   module="my_agent_broken")
    with pytest.raises(EdgePruneError, match=r"agent plug-in 'broken' \(my_agent_broken, from my-agent-plugin\) "
                                             r"failed to load: ModuleNotFoundError"):
        make_agent("uniform", SPACE, budget=3, seed=0, latency_ratio=0.5)


def test_a_plugin_module_that_registers_nothing_is_refused(tmp_path, monkeypatch, isolated_registry):
    install_plugin(tmp_path, monkeypatch, "X = 1\n", "empty = my_agent_empty", module="my_agent_empty")
    with pytest.raises(EdgePruneError, match="'empty'.*registered no agent"):
        check_agent("uniform", {})


def test_two_agents_cannot_take_one_name(isolated_registry):
    with pytest.raises(EdgePruneError, match="'uniform' is registered twice"):
        @register("uniform")
        def other(space, *, budget, seed, latency_ratio):
            pass


def test_a_factory_with_the_wrong_signature_is_refused_at_registration(isolated_registry):
    with pytest.raises(EdgePruneError, match="must take"):
        @register("nosig")
        def nosig(space):
            pass


def test_an_object_lacking_protocol_members_is_refused(isolated_registry):
    class Half:
        name = "half"

        def ask(self):
            return None

        def tell(self, c, r):
            pass

    register("half")(lambda space, *, budget, seed, latency_ratio: Half())
    assert not isinstance(Half(), Agent)
    with pytest.raises(EdgePruneError, match="lacks batch, constraint, feasible, describe"):
        make_agent("half", SPACE, budget=3, seed=0, latency_ratio=0.5)


def test_every_module_of_the_package_is_discovered():
    import pkgutil

    import edgeprune.search.agents as pkg

    assert BUILT_IN <= set(AGENTS)
    modules = {f.__module__ for f in AGENTS.values()}
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name != "base":
            assert f"edgeprune.search.agents.{mod.name}" in modules


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_agent_satisfies_the_protocol(name):
    agent = make_agent(name, SPACE, budget=6, seed=0, latency_ratio=0.5)
    assert isinstance(agent, Agent)
    assert agent.name == name
    assert isinstance(agent.batch, int) and agent.batch == 1
    assert agent.constraint == ("macs" if name == "bo-flops" else "latency")
    info = agent_info(agent)
    assert info["name"] == name and json.loads(json.dumps(info)) == info
    c = agent.ask()
    assert c is not None and len(c.widths) == SPACE.dim
    r = result(c)
    assert isinstance(agent.feasible(r), bool)
    agent.tell(c, r)


def test_built_in_agents_inherit_the_defaults():
    for name in ("uniform", "random"):
        agent = make_agent(name, SPACE, budget=6, seed=0, latency_ratio=0.5)
        assert isinstance(agent, BaseAgent) and agent.describe() == {}
    q = make_agent("bo", SPACE, budget=6, seed=0, latency_ratio=0.5, batch=3)
    assert q.batch == 3 and agent_info(q)["batch"] == 3
    # bo-flops judges feasibility by MACs, not by the evaluator's latency verdict.
    flops = make_agent("bo-flops", SPACE, budget=6, seed=0, latency_ratio=0.5)
    r = result(SPACE.full(), target=2.0)
    assert r.feasible and not flops.feasible(r)


def test_unknown_agent_lists_the_available_ones():
    with pytest.raises(EdgePruneError, match=r"unknown agent 'nope'; available: bo, bo-flops, bo-plain, random, rl, uniform"):
        make_agent("nope", SPACE, budget=1, seed=0, latency_ratio=0.5)
    with pytest.raises(EdgePruneError, match="unknown agent 'nope'"):
        check_agent("nope", {})


def test_options_are_strict():
    with pytest.raises(EdgePruneError, match=r"agent 'uniform' takes no option 'clusters' \(it takes: tol\)"):
        make_agent("uniform", SPACE, budget=1, seed=0, latency_ratio=0.5, clusters=3)
    with pytest.raises(EdgePruneError, match=r"agent 'random' takes no option 'batch' \(it takes none\)"):
        make_agent("random", SPACE, budget=1, seed=0, latency_ratio=0.5, batch=2)
    with pytest.raises(EdgePruneError, match=r"agent 'bo-plain' takes no options 'clusters', 'stagnation'"):
        make_agent("bo-plain", SPACE, budget=1, seed=0, latency_ratio=0.5, clusters=2, stagnation=3)


def test_check_agent_needs_no_search_space():
    check_agent("bo", {"clusters": 3, "batch": 2})
    check_agent("bo-plain", {"batch": 2})
    check_agent("uniform", {})
    check_agent("random", None)
    with pytest.raises(EdgePruneError, match=r"agent 'uniform' takes no option 'batch'"):
        check_agent("uniform", {"batch": 2})
    with pytest.raises(EdgePruneError, match="'bo-plain' takes no option 'clusters'"):
        check_agent("bo-plain", {"clusters": 3})
    with pytest.raises(EdgePruneError, match="'seed' is set by the run"):
        check_agent("bo", {"seed": 1})
    assert set(agent_options("bo")) >= {"clusters", "batch", "uniform_init"}
