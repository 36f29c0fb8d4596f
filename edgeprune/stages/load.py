"""Stage 1, load: every option, the target profile, the model and the data, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune.config import CompileConfig, LatencyTarget
from edgeprune.data import DataSplits, load_data
from edgeprune.errors import DataError, InputShapeError, TargetError
from edgeprune.latency.where import MeasurePlan, measurement_plan
from edgeprune.model.load import LoadedModel, check_input_shape, load_model
from edgeprune.outputs import check_out_dir
from edgeprune.report import sha256_file
from edgeprune.search.agents import check_agent
from edgeprune.targets import load_target
from edgeprune.targets.profile import TargetProfile


@dataclass(frozen=True)
class Inputs:
    """What the run works on: the settings, the target and who measures it, the model and the data."""

    cfg: CompileConfig
    profile: TargetProfile
    plan: MeasurePlan
    target: LatencyTarget
    loaded: LoadedModel
    data: DataSplits
    model_sha256: str
    out_root: Path

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.loaded.input_shape)


def agent_options(cfg: CompileConfig) -> dict:
    """The agent options the user set (an agent that does not take one refuses it)."""
    opts = {}
    if cfg.clusters is not None:
        opts["clusters"] = cfg.clusters
    if cfg.batch != 1:
        opts["batch"] = cfg.batch
    return opts


def load(cfg: CompileConfig, rep) -> Inputs:
    """Validate everything that can be validated without measuring: the output folder is writable, the
    agent and its options exist, the profile loads and can be measured, the model loads safely and accepts
    its input shape, and the data fits it."""
    out_root = check_out_dir(cfg.out)
    check_agent(cfg.agent, agent_options(cfg))
    target = LatencyTarget.parse(cfg.latency_target)
    profile = load_target(cfg.target)
    plan = measurement_plan(profile, cfg.measure_on, tracker=cfg.tracker, device_key=cfg.device_key)
    if cfg.tune_trials and (plan.stand_in or plan.remote is not None or not profile.is_local):
        raise TargetError(f"--tune-trials tunes on this machine, so only for a target that is this machine; target "
                          f"{profile.name} is not (tuning on a stand-in would tune for the wrong CPU, and tuning "
                          f"through TVM RPC devices is not supported yet)")
    if profile.unsupported:
        rep.warn(f"{profile.name}: {profile.unsupported}")
    loaded = load_model(cfg.model, arch=cfg.arch, input_shape=cfg.input_shape, trust_code=cfg.trust_model_code)
    data = load_data(cfg.data)
    if tuple(data.input_shape) != tuple(loaded.input_shape):
        raise InputShapeError(f"data {data.name!r} has inputs {tuple(data.input_shape)} but the model expects "
                              f"{tuple(loaded.input_shape)}")
    n_out = check_input_shape(loaded.model, loaded.input_shape)
    if n_out != data.num_classes:
        raise DataError(f"data {data.name!r} has {data.num_classes} classes but the model outputs {n_out}")
    return Inputs(cfg, profile, plan, target, loaded, data, sha256_file(cfg.model), out_root)
