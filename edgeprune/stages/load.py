"""Stage 1, load: every option, the target profile, the model and the data, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune.config import CompileConfig, LatencyTarget
from edgeprune.data import DataSplits, load_data, resolve_normalisation
from edgeprune.errors import DataError, EdgePruneError, TargetError
from edgeprune.latency.where import MeasurePlan, measurement_plan
from edgeprune.model.evaluate import resolve_device
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
    train_device: str = "cpu"  # resolved --train-device: where fine-tuning, BN recalibration and accuracy run
    normalisation_source: str = ""  # where data.normalisation came from (--normalize, the checkpoint, ...)

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


def check_cluster_by(cfg: CompileConfig) -> None:
    """``--cluster-by sensitivity`` costs one evaluation per group: refused for an agent that does not
    cluster (one without a ``clusters`` option, e.g. bo-plain, uniform) and for GDP, which does not search."""
    if cfg.cluster_by == "importance":
        return
    from edgeprune.search.agents.base import agent_options as taken

    options = taken(cfg.agent)
    if cfg.method == "gdp" or (options is not None and "clusters" not in options):
        what = "GDP (no search)" if cfg.method == "gdp" else f"the agent {cfg.agent!r}"
        raise EdgePruneError(f"--cluster-by {cfg.cluster_by}: {what} does not cluster groups (bo and bo-flops do)")


def load(cfg: CompileConfig, rep) -> Inputs:
    """Validate everything that can be validated without measuring: the output folder is writable, the
    agent and its options exist, the profile loads and can be measured, the model loads safely and accepts
    its input shape, and the data fits it."""
    train_device = resolve_device(cfg.train_device)  # --train-device cuda without CUDA: refused before any work
    out_root = check_out_dir(cfg.out)
    check_agent(cfg.agent, agent_options(cfg))
    check_cluster_by(cfg)
    target = LatencyTarget.parse(cfg.latency_target)
    profile = load_target(cfg.target)
    plan = measurement_plan(profile, cfg.measure_on, tracker=cfg.tracker, device_key=cfg.device_key)
    if cfg.tune_trials and (plan.stand_in or (plan.remote is None and not profile.is_local)):
        raise TargetError(f"--tune-trials times trials where the model runs: on this machine for a local target, on "
                          f"the devices of --tracker/--device-key for another; target {profile.name} is measured "
                          f"{'on a stand-in (it would tune for the wrong CPU)' if plan.stand_in else 'nowhere'}"
                          f" — pass --tracker and --device-key to tune on the device")
    if profile.unsupported:
        rep.warn(f"{profile.name}: {profile.unsupported}")
    loaded = load_model(cfg.model, arch=cfg.arch, arch_kwargs=cfg.arch_kwargs_dict(), input_shape=cfg.input_shape,
                        trust_code=cfg.trust_model_code)
    norm, norm_source, norm_warning = normalisation_for(cfg, loaded)
    if norm_warning:
        rep.warn(norm_warning)
    # The data are brought to the model's C×H×W (resized; a channel mismatch is an InputShapeError).
    data = load_data(cfg.data, norm, tuple(loaded.input_shape))
    n_out = check_input_shape(loaded.model, loaded.input_shape)
    if n_out != data.num_classes:
        raise DataError(f"data {data.name!r} has {data.num_classes} classes but the model outputs {n_out}; give "
                        f"data with {n_out} classes, or a new head for this data with --arch-kwargs "
                        f"num_classes={data.num_classes}")
    return Inputs(cfg, profile, plan, target, loaded, data, sha256_file(cfg.model), out_root, train_device=train_device,
                  normalisation_source=norm_source)


def normalisation_for(cfg: CompileConfig, loaded: LoadedModel):
    """(Normalisation, where it came from, a warning or None): ``--normalize``, else the checkpoint's record,
    else the model's own config, else ImageNet's (see ``edgeprune.data.normalisation``)."""
    from edgeprune.model.zoo import ZOO

    source = loaded.meta.get("source")
    # An edgeprune checkpoint records its normalisation (one that does not was trained with the legacy one);
    # model.pt of a pickled-module run records it too.
    meta = loaded.meta if source == "edgeprune-checkpoint" or (
        source == "pickled-module-checkpoint" and "normalisation" in loaded.meta) else None
    zoo_arch = loaded.arch if meta is None and loaded.arch in ZOO else None
    return resolve_normalisation(cfg.normalize, channels=int(loaded.input_shape[0]), checkpoint_meta=meta,
                                 zoo_arch=zoo_arch, model=loaded.model)
