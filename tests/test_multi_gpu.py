"""Multi-GPU training the MONAI model zoo's way, on CPU: ``torchrun --nproc_per_node 2`` with the gloo backend.

A bundle's ``configs/multi_gpu_train.json`` is merged on top of its training configs, as in the zoo::

    python -m torch.distributed.run --nproc_per_node 2 -m monai.bundle run --config_file \\
        "['configs/inference.json','configs/train_common.json','configs/train_diffusion.json','configs/multi_gpu_train.json']"

The runs here add one more config (tiny networks, phantom data, and a ``+run`` item with which every rank dumps its
trainer state) and check that the run succeeds, that only rank 0 writes (one checkpoint, one TensorBoard file, one
weights file), that every rank holds exactly the state of rank 0's checkpoint (and resumes from it), and that 2 ranks
with half-batches train what one process trains with the whole batch, to float tolerance. Also: how
``multi_gpu_train.json`` composes with every training stage, and the bundles' ``large_files.yml``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from medgen_monai.cli import _run_bundle
from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.describe import OracleDescriber, describe_dataset, get_task
from medgen_monai.engines.bundles import weights_files
from medgen_monai.io.weights import file_sha256, load_weights
from medgen_monai.phantoms import get_phantom

ROOT = Path(__file__).parents[1]
BUNDLES = ROOT / "bundles"
TRAINING_BUNDLES = sorted(p.parents[1].name for p in BUNDLES.glob("*/configs/train_common.json"))
ALL_BUNDLES = sorted(p.parents[1].name for p in BUNDLES.glob("*/configs/inference.json"))
INIT = "$medgen_monai.engines.init_distributed(@backend, @device)"
# every rank dumps its trainer's whole state (what a checkpoint holds) after the run
DUMP = "$torch.save(@train#trainer.state_for_checkpoint(), @dump_dir + '/rank%d.pt' % medgen_monai.engines.get_rank())"
TINY_UNET = {
    "network_def#channels": [8, 16, 16],
    "network_def#attention_levels": [False, True, True],
    "network_def#num_head_channels": 8,
    "network_def#norm_num_groups": 8,
    "network_def#prototype_heads": 2,
    "network_def#prototype_tokens": 4,
}
TINY_AUTOENCODER = {"autoencoder_def#channels": [8, 16], "autoencoder_def#norm_num_groups": 4}
# a patch discriminator with instance norm (per sample: shards of a batch see what the whole batch sees)
DISCRIMINATOR = {
    "discriminator": {
        "_target_": "monai.networks.nets.PatchDiscriminator",
        "spatial_dims": 2,
        "num_layers_d": 1,
        "channels": 8,
        "in_channels": "@image_channels",
        "out_channels": 1,
        "norm": "INSTANCE",
    },
    "discriminator_optimizer": {"_target_": "torch.optim.Adam", "params": "$@discriminator.parameters()", "lr": 1e-3},
    "train#trainer#discriminator": "@discriminator",
    "train#trainer#discriminator_optimizer": "@discriminator_optimizer",
}


# ---- helpers -----------------------------------------------------------------------------------------------------
def stages(bundle: str) -> list[str]:
    return sorted(
        p.stem[len("train_") :] for p in (BUNDLES / bundle / "configs").glob("train_*.json") if p.stem != "train_common"
    )


def copy_bundle(bundle: str, tmp: Path) -> Path:
    """A copy of the bundle (configs, models, bank): what a run writes by default lands in the copy, never the repo."""
    copy = tmp / bundle
    shutil.copytree(BUNDLES / bundle, copy, ignore=shutil.ignore_patterns("train", "output", "docs"))
    return copy


def overrides(path: Path, dump_dir: Path, **values: Any) -> Path:
    """The test's config, merged last: ``values`` and the rank dump into ``dump_dir``."""
    dump_dir.mkdir(parents=True, exist_ok=True)
    config = {"+imports": ["$import medgen_monai.engines"], "dump_dir": str(dump_dir), "+run": [DUMP], **values}
    path.write_text(json.dumps(config, indent=1))
    return path


def torchrun(root: Path, configs: list[str], extra: Path, nproc: int = 2) -> None:
    """``python -m torch.distributed.run --nproc_per_node <nproc> -m monai.bundle run`` from the bundle folder."""
    files = [f"configs/{name}" for name in configs] + [str(extra)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(files),
        "--meta_file",
        "configs/metadata.json",
        "--bundle_root",
        ".",
    ]
    run = subprocess.run(
        command,
        check=False,
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]


def single(root: Path, configs: list[str], extra: Path) -> None:
    """The same configs in this process, without ``multi_gpu_train.json``: the one-process reference."""
    _run_bundle(root, [*configs, str(extra)])


def dumped(folder: Path, rank: int) -> dict[str, Any]:
    state = torch.load(folder / f"rank{rank}.pt", map_location="cpu", weights_only=True)
    state.pop("train_seconds")
    return state


def checkpoint(train_dir: Path) -> dict[str, Any]:
    assert sorted(p.name for p in (train_dir / "checkpoints").iterdir()) == ["last.pt"]  # one file, no temporaries
    state = torch.load(train_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    state.pop("train_seconds")
    return state


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Bit-identical nested states (tensors, numbers, strings, lists, dicts)."""
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def assert_trains_alike(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], lr: float, iterations: int) -> None:
    """Weights of a 2-rank run against one process's: equal up to float summation order. A weight whose true gradient
    is 0 (a bias before a normalisation) gets float noise, which Adam turns into steps of up to ``lr`` per iteration;
    every other weight agrees to ~1e-6, so the mean difference is tiny while a wrong gradient moves them all."""
    assert list(a) == list(b)
    floats = [k for k in a if a[k].is_floating_point()]
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in floats)
    mean = sum(float((a[k].float() - b[k].float()).abs().sum()) for k in floats) / sum(a[k].numel() for k in floats)
    assert worst <= lr * iterations + 1e-6 and mean < 1e-6, (worst, mean)


# ---- the bundles' multi_gpu_train.json -----------------------------------------------------------------------------
def test_every_training_bundle_has_a_multi_gpu_config_and_a_large_files_list():
    assert TRAINING_BUNDLES and set(TRAINING_BUNDLES) <= set(ALL_BUNDLES)
    for bundle in TRAINING_BUNDLES:
        assert (BUNDLES / bundle / "configs" / "multi_gpu_train.json").is_file(), bundle
    for bundle in ALL_BUNDLES:
        assert (BUNDLES / bundle / "large_files.yml").is_file(), bundle


@pytest.mark.parametrize("bundle", TRAINING_BUNDLES)
def test_multi_gpu_config_composes_with_every_training_stage(bundle):
    """Merged last, it overrides the device, initialises the process group after the stage's own ``initialize``
    items (``+initialize``), destroys it in ``finalize`` and leaves the stage's ``run`` alone."""
    from monai.bundle import ConfigParser

    configs = BUNDLES / bundle / "configs"
    multi = json.loads((configs / "multi_gpu_train.json").read_text())
    expressions = [v for v in json.dumps(multi).split('"') if v.startswith("$")]
    assert expressions and all(len(e) < 100 for e in expressions)  # long logic lives in named package functions
    for stage in stages(bundle):
        files = [configs / "inference.json", configs / "train_common.json", configs / f"train_{stage}.json"]
        plain = ConfigParser.load_config_files([str(f) for f in files])
        merged = ConfigParser.load_config_files([str(f) for f in files] + [str(configs / "multi_gpu_train.json")])
        assert merged["initialize"] == plain.get("initialize", []) + [INIT], stage
        assert merged["run"] == plain["run"] and merged["finalize"] == ["$medgen_monai.engines.destroy_distributed()"]
        assert merged["device"] == "$medgen_monai.engines.distributed_device()"
        assert merged["imports"] == plain["imports"] + ["$import medgen_monai.engines"]
        assert "$@train#trainer.run_training()" in merged["run"]  # one trainer per stage: the engine does the rest


def test_cli_train_multi_gpu_adds_the_config(monkeypatch):
    from medgen_monai import cli

    calls = []
    monkeypatch.setattr(cli, "_run_bundle", lambda root, configs, **overrides: calls.append((configs, overrides)))
    cli.train(str(BUNDLES / "vap_diffusion_derm"), "diffusion", multi_gpu=True)
    cli.train(str(BUNDLES / "vap_diffusion_derm"), "autoencoder", progress=False, multi_gpu=True)
    cli.train(str(BUNDLES / "vap_diffusion_derm"), "autoencoder")
    assert calls[0][0] == ["inference.json", "train_common.json", "train_diffusion.json", "multi_gpu_train.json"]
    assert calls[0][1]["progress"] is None and calls[1][1]["progress"] is False  # rank 0's bars, or none
    assert calls[2][0] == ["inference.json", "train_common.json", "train_autoencoder.json"] and calls[2][1]["progress"]


def test_init_distributed_outside_torchrun_and_bad_backends_are_one_clear_error(monkeypatch):
    from medgen_monai.engines import distributed_backend, distributed_device, init_distributed, is_distributed

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    if not torch.cuda.is_available():
        assert distributed_backend() == "gloo" and distributed_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="torch.distributed.run --nproc_per_node N"):
        init_distributed("gloo")
    with pytest.raises(ValueError, match="backend must be one of"):
        init_distributed("mpi")
    assert not is_distributed()


# ---- the engine, in one process ------------------------------------------------------------------------------------
def test_indexed_batches_split_every_batch_across_the_ranks():
    from test_trainer import toy_dataset

    from medgen_monai.engines import IndexedBatches

    whole = IndexedBatches(toy_dataset(12), batch_size=4, seed=3)
    shards = [whole.shard(rank, 2) for rank in range(2)]
    for iteration in range(7):
        assert shards[0].indices(iteration) + shards[1].indices(iteration) == whole.indices(iteration)
        assert shards[1].global_indices(iteration) == whole.indices(iteration)
    assert shards[0].epoch_length == whole.epoch_length and shards[0](0)["image"].shape[0] == 2
    with pytest.raises(ValueError, match="batch_size 4 must be a multiple of world_size 3"):
        whole.shard(0, 3)
    with pytest.raises(ValueError, match="rank must be in"):
        whole.shard(2, 2)


def test_only_rank_0_writes_checkpoints_samples_and_tensorboard(tmp_path):
    from test_trainer import tiny_autoencoder, toy_dataset

    from medgen_monai.engines import AutoencoderTrainer, IndexedBatches

    def trainer(out: Path) -> AutoencoderTrainer:
        network = tiny_autoencoder()
        return AutoencoderTrainer(
            network,
            torch.optim.Adam(network.parameters(), 1e-3),
            IndexedBatches(toy_dataset(), 4),
            max_iterations=2,
            output_dir=out,
            sample_every=1,
            checkpoint_every=1,
            progress=False,
        )

    main, other = trainer(tmp_path / "rank0"), trainer(tmp_path / "rank1")
    other.rank = 1  # as rank 1 of a run (its world of one needs no collectives)
    main.run_training()
    other.run_training()
    assert other.state.iteration == 2 and not (tmp_path / "rank1").exists()
    assert {p.name for p in (tmp_path / "rank0").iterdir()} == {"checkpoints", "samples", "tensorboard"}


def test_a_distributed_data_parallel_wrapper_is_refused(tmp_path):
    import torch.distributed as dist
    from test_trainer import tiny_autoencoder, toy_dataset

    from medgen_monai.engines import AutoencoderTrainer, IndexedBatches

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        network = torch.nn.parallel.DistributedDataParallel(tiny_autoencoder())
        with pytest.raises(ValueError, match="network: pass the plain module"):
            AutoencoderTrainer(
                network,
                torch.optim.Adam(network.parameters()),
                IndexedBatches(toy_dataset(), 4),
                max_iterations=1,
                output_dir=tmp_path,
            )
    finally:
        dist.destroy_process_group()


# ---- two ranks through the bundles' configs ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def derm(tmp_path_factory) -> dict[str, Path]:
    """Derm phantoms in the ISIC layout and their oracle description bank (as tests/test_bundle_vap.py makes them)."""
    root = tmp_path_factory.mktemp("multi_gpu_derm")
    data = write_dataset("isic", get_phantom("derm").generate_many(24, seed=11), root / "data")
    task = get_task("derm")
    describe_dataset(read_dataset("isic", data), task, OracleDescriber(task), root / "bank", progress=False)
    return {"data": data, "bank": root / "bank"}


def test_vap_diffusion_on_two_ranks_trains_what_one_process_trains_and_only_rank_0_writes(derm, tmp_path):
    bundle = copy_bundle("vap_diffusion_derm", tmp_path)
    configs = ["inference.json", "train_common.json", "train_diffusion.json"]
    common = {
        "dataset_dir": str(derm["data"]),
        "bank_dir": str(derm["bank"]),
        "max_iterations": 2,
        "train_batch_size": 4,
        "sample_every": 2,
        "checkpoint_every": 100,
        "progress": False,
        **TINY_UNET,
    }
    two = tmp_path / "two"
    # every rank is given a folder and weights file of its own: rank 1's stay unwritten
    rank = "medgen_monai.engines.get_rank()"
    torchrun(
        bundle,
        [*configs, "multi_gpu_train.json"],
        overrides(
            tmp_path / "two.json",
            two,
            train_dir=f"$'{two}/train_rank%d' % {rank}",
            trained_model_dir=f"$'{two}/models_rank%d' % {rank}",
            **common,
        ),
    )
    one = tmp_path / "one"
    single(
        bundle,
        configs,
        overrides(tmp_path / "one.json", one, train_dir=str(one / "train"), trained_model_dir=str(one), **common),
    )

    assert not (two / "train_rank1").exists() and not (two / "models_rank1").exists()
    assert len(list((two / "train_rank0" / "tensorboard").iterdir())) == 1
    assert [p.name for p in (two / "train_rank0" / "samples").iterdir()] == ["iteration_0000002.png"]
    states = [dumped(two, 0), dumped(two, 1)]
    assert_identical(states[0], states[1], "rank 0 vs rank 1")
    assert_identical(checkpoint(two / "train_rank0"), states[0], "checkpoint vs rank 0")
    reference = dumped(one, 0)
    # the plain module's keys (no DDP "module." prefix), the same as one process's checkpoint
    assert list(states[0]["network"]) == list(reference["network"]) and not any(
        k.startswith("module.") for k in states[0]["network"]
    )
    assert list(states[0]["ema"]) == list(reference["ema"])
    assert torch.equal(states[0]["generator"], reference["generator"])  # every draw was made for the whole batch
    assert states[0]["extra"]["scale_factor"] == pytest.approx(reference["extra"]["scale_factor"], rel=1e-5)
    assert_trains_alike(states[0]["network"], reference["network"], lr=1e-3, iterations=2)
    assert_trains_alike(states[0]["ema"], reference["ema"], lr=1e-3, iterations=2)
    extra = load_weights(two / "models_rank0" / "diffusion.pt", bundle="vap_diffusion_derm", role="diffusion")
    assert extra["processes"] == 2 and "processes" not in load_weights(one / "diffusion.pt")


def test_autoencoder_stage_on_two_ranks_resumes_the_checkpoint_and_trains_what_one_process_trains(derm, tmp_path):
    """The autoencoder stage with a patch discriminator (its optimiser's gradients are averaged too): one iteration in
    one process, then both ranks resume from its checkpoint, against one process resuming from the same one."""
    bundle = copy_bundle("vap_diffusion_derm", tmp_path)
    configs = ["inference.json", "train_common.json", "train_autoencoder.json"]
    common = {
        "dataset_dir": str(derm["data"]),
        "train_batch_size": 4,
        "sample_every": 2,
        "checkpoint_every": 100,
        "progress": False,
        **TINY_AUTOENCODER,
        **DISCRIMINATOR,
    }
    first = tmp_path / "first"
    single(
        bundle,
        configs,
        overrides(
            tmp_path / "first.json",
            first,
            max_iterations=1,
            train_dir=str(first / "train"),
            trained_model_dir=str(first),
            **common,
        ),
    )
    two, one = tmp_path / "two", tmp_path / "one"
    for folder in (two, one):
        shutil.copytree(first / "train", folder / "train")
    torchrun(
        bundle,
        [*configs, "multi_gpu_train.json"],
        overrides(
            tmp_path / "two.json",
            two,
            max_iterations=2,
            train_dir=str(two / "train"),
            trained_model_dir=str(two),
            **common,
        ),
    )
    single(
        bundle,
        configs,
        overrides(
            tmp_path / "one.json",
            one,
            max_iterations=2,
            train_dir=str(one / "train"),
            trained_model_dir=str(one),
            **common,
        ),
    )

    states = [dumped(two, 0), dumped(two, 1)]
    assert states[0]["iteration"] == 2 and "discriminator" in states[0]["extra"]
    assert_identical(states[0], states[1], "rank 0 vs rank 1")
    assert_identical(checkpoint(two / "train"), states[0], "checkpoint vs rank 0")
    # the resumed run's TensorBoard file, beside the first run's: rank 0's only
    assert (
        len(list((two / "train" / "tensorboard").iterdir()))
        == len(list((first / "train" / "tensorboard").iterdir())) + 1
    )
    reference = dumped(one, 0)
    assert torch.equal(states[0]["generator"], reference["generator"])
    assert_trains_alike(states[0]["network"], reference["network"], lr=1e-3, iterations=2)
    assert_trains_alike(states[0]["extra"]["discriminator"], reference["extra"]["discriminator"], lr=1e-3, iterations=2)
    assert list(load_weights(two / "autoencoder.pt").keys()) == [
        "iterations",
        "train_seconds",
        "threads",
        "device",
        "processes",
    ]


# ---- the engine under torchrun: rank 0's state everywhere, resume from a 2-rank checkpoint -------------------------
def _toy_ranks(out: Path) -> None:
    """Run under torchrun by test_engine_ranks_start_from_rank_0_and_resume_from_its_checkpoint."""
    from monai.networks.nets import PatchDiscriminator
    from test_trainer import ldm_trainer, tiny_autoencoder, toy_dataset

    from medgen_monai.engines import AutoencoderTrainer, IndexedBatches, destroy_distributed, get_rank, init_distributed

    init_distributed()
    for iterations in (2, 4):  # the second trainer resumes from rank 0's checkpoint at 2
        torch.manual_seed(100 + get_rank())  # every rank's discriminator starts different: rank 0's is broadcast
        discriminator = PatchDiscriminator(spatial_dims=2, num_layers_d=1, channels=8, in_channels=1, out_channels=1)
        network = tiny_autoencoder()
        trainer = AutoencoderTrainer(
            network,
            torch.optim.Adam(network.parameters(), 1e-3),
            IndexedBatches(toy_dataset(), 4),
            discriminator=discriminator,
            discriminator_optimizer=torch.optim.Adam(discriminator.parameters(), 1e-3),
            max_iterations=iterations,
            output_dir=out / "ae",
            checkpoint_every=2,
            progress=False,
        )
        trainer.run_training()
        diffusion = ldm_trainer(out / "ldm", max_iterations=iterations + 1, checkpoint_every=100, latent_cache=True)
        diffusion.run_training()
    for name, state in (("ae", trainer.state_for_checkpoint()), ("ldm", diffusion.state_for_checkpoint())):
        state.pop("train_seconds")
        torch.save(state, out / f"{name}_rank{get_rank()}.pt")
    destroy_distributed()


@pytest.mark.slow
def test_engine_ranks_start_from_rank_0_and_resume_from_its_checkpoint(tmp_path):
    """Batch-norm statistics (a discriminator's) follow rank 0 after every step; a resumed run on every rank equals
    one process's uninterrupted run."""
    from test_trainer import ldm_trainer

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        str(tmp_path),
    ]
    run = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    for name in ("ae", "ldm"):
        ranks = [torch.load(tmp_path / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]
        assert_identical(ranks[0], ranks[1], name)
        assert_identical(checkpoint(tmp_path / name), ranks[0], f"{name} checkpoint")
    assert ranks[0]["iteration"] == 5
    straight = ldm_trainer(tmp_path / "straight", max_iterations=5, checkpoint_every=100, latent_cache=True)
    straight.run_training()
    assert torch.equal(ranks[0]["generator"], straight.generator.get_state())
    assert_trains_alike(ranks[0]["network"], straight.network.state_dict(), lr=1e-3, iterations=5)


# ---- every other bundle and stage on two ranks -------------------------------------------------------------------
SLOW_STAGES = [
    (b, s)
    for b in TRAINING_BUNDLES
    for s in stages(b)
    if (b, s) not in {("vap_diffusion_derm", "diffusion"), ("vap_diffusion_derm", "autoencoder")}
]
# stages that load weights of earlier ones the bundle does not ship: trained first, in one process
PREREQUISITES = {
    ("ccella_prostate_mri", "diffusion"): [("autoencoder", {})],
    ("medcodim_cxr", "stream"): [("autoencoder", {}), ("report_vae", {}), ("alignment", {})],
    ("medcodim_cxr", "joint"): [("autoencoder", {}), ("report_vae", {}), ("alignment", {})]
    + [("stream", {"stream": s}) for s in ("frontal", "lateral", "report")],
}
LAYOUTS = {"derm": "isic", "colon": "kvasir", "cxr": "mimic_cxr", "prostate": "picai"}


def _tiny(bundle: str, stage: str) -> dict[str, Any]:
    """Tiny networks; a shipped bundle's diffusion stage keeps its autoencoder (it loads the shipped weights)."""
    if bundle.startswith("vap_diffusion_"):
        levels = len(
            json.loads((BUNDLES / bundle / "configs" / "inference.json").read_text())["autoencoder_def"]["channels"]
        )
        autoencoder = {**TINY_AUTOENCODER, "autoencoder_def#channels": [8, 16, 16][:levels]}
        return {**TINY_UNET, **(autoencoder if stage == "autoencoder" else {})}
    if bundle == "ldm_label_derm":
        unet = {
            "network_def#channels": [8, 16, 16],
            "network_def#num_head_channels": 8,
            "network_def#norm_num_groups": 8,
        }
        return {
            **unet,
            **(
                {"autoencoder_def#channels": [8, 8, 16], "autoencoder_def#norm_num_groups": 4}
                if stage == "autoencoder"
                else {}
            ),
        }
    if bundle == "ccella_prostate_mri":
        from test_bundle_ccella import TINY

        return {**TINY, "crop_size": [16, 16, 8]}
    from test_bundle_medcodim import TINY

    return dict(TINY)


@pytest.mark.slow
@pytest.mark.parametrize(("bundle", "stage"), SLOW_STAGES)
def test_every_training_stage_runs_on_two_ranks(bundle, stage, tmp_path):
    """The stage's own configs + multi_gpu_train.json on 2 ranks: every rank holds rank 0's checkpoint's state."""
    copy = copy_bundle(bundle, tmp_path)
    kind = json.loads((BUNDLES / bundle / "configs" / "train_common.json").read_text())["dataset_dir"].split("/")[-1]
    data = write_dataset(LAYOUTS[kind], get_phantom(kind).generate_many(24, seed=11), tmp_path / "data")
    common: dict[str, Any] = {
        "dataset_dir": str(data),
        "train_batch_size": 4,
        "sample_every": 2,
        "checkpoint_every": 100,
        "progress": False,
        "train_root": str(copy / "train"),
        "trained_model_dir": str(copy / "models"),
        **_tiny(bundle, stage),
    }
    if (copy / "bank").is_dir():
        task = get_task(kind)
        describe_dataset(
            read_dataset(LAYOUTS[kind], data), task, OracleDescriber(task), tmp_path / "bank", progress=False
        )
        common["bank_dir"] = str(tmp_path / "bank")
    for before, extra in PREREQUISITES.get((bundle, stage), []):
        single(
            copy,
            ["inference.json", "train_common.json", f"train_{before}.json"],
            overrides(tmp_path / "before.json", tmp_path / "before", max_iterations=1, **common, **extra),
        )
    run = tmp_path / "two"
    stream = {"stream": "frontal"} if stage == "stream" else {}
    torchrun(
        copy,
        ["inference.json", "train_common.json", f"train_{stage}.json", "multi_gpu_train.json"],
        overrides(tmp_path / "two.json", run, max_iterations=2, train_dir=str(run / "train"), **common, **stream),
    )
    states = [dumped(run, 0), dumped(run, 1)]
    assert states[0]["iteration"] == 2
    assert_identical(states[0], states[1], "rank 0 vs rank 1")
    assert_identical(checkpoint(run / "train"), states[0], "checkpoint vs rank 0")


# ---- large_files.yml -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_large_files_list_every_weights_file_with_its_sha256(bundle):
    """The zoo's large_files.yml: every weights file the configs load, in the repository (no url) with its sha256;
    a bundle in development lists them without a hash, and ships none of them."""
    root = BUNDLES / bundle
    from monai.bundle import ConfigParser

    assert "in the repository" in (root / "large_files.yml").read_text()
    entries = ConfigParser.load_config_file(str(root / "large_files.yml"))["large_files"]
    paths = [entry["path"] for entry in entries]
    assert len(set(paths)) == len(paths)
    assert {p.relative_to(root).as_posix() for p in weights_files(root)} <= set(paths)
    for entry in entries:
        assert set(entry) == {"path", "url", "hash_val", "hash_type"} and entry["hash_type"] == "sha256", entry
        path = root / entry["path"]
        if entry["hash_val"]:
            assert path.is_file(), f"{path}: listed with a hash, missing"
            assert file_sha256(path) == entry["hash_val"], f"{path}: sha256 differs from large_files.yml (retrained?)"
        else:
            assert not path.is_file(), f"{path}: shipped, but large_files.yml gives no hash_val"


@pytest.mark.parametrize("bundle", [b for b in ALL_BUNDLES if all(p.is_file() for p in weights_files(BUNDLES / b))])
def test_monai_checks_the_shipped_files_hashes(bundle):
    from monai.bundle import download_large_files

    download_large_files(bundle_path=str(BUNDLES / bundle))  # existing files: MONAI checks the hash, downloads nothing


if __name__ == "__main__":  # the ranks of test_engine_ranks_start_from_rank_0_and_resume_from_its_checkpoint
    sys.path.insert(0, str(Path(__file__).parent))
    _toy_ranks(Path(sys.argv[1]))
