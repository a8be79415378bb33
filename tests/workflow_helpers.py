"""MONAI's own workflow API on a bundle: ``create_workflow(workflow_type="infer")``, its property check, a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.bundle import create_workflow


def folder_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (``__pycache__`` aside): a bundle folder is never written at run time."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def run_infer_workflow(root: Path, **overrides: Any) -> Any:
    """Build ``root``'s inference workflow with MONAI's ``create_workflow``, check that no inference property is
    missing, run it (``initialize``, ``run``, ``finalize``), check that nothing in ``root`` changed, and return the
    workflow."""
    before = folder_digest(root)
    workflow = create_workflow(
        config_file=str(root / "configs" / "inference.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(root),
        **overrides,
    )
    assert workflow.check_properties() == [], f"{root.name}: missing inference properties"
    # the properties MONAI Label and the workflow API read, by name
    for name in ("bundle_root", "device", "dataset_dir", "dataset", "evaluator", "network_def", "inferer"):
        assert getattr(workflow, name) is not None, f"{root.name}: property {name} is None"
    workflow.run()
    workflow.finalize()
    assert folder_digest(root) == before, f"{root.name}: the inference workflow wrote into the bundle folder"
    return workflow


def run_train_workflow(root: Path, configs: list[str], **overrides: Any) -> Any:
    """Train a stage through MONAI's workflow API (``ConfigWorkflow(workflow_type="train")``), as MONAI Label's train
    tasks do: initialise, check that no train property is missing, run, finalise; ``root`` must not change."""
    from monai.bundle import ConfigWorkflow

    before = folder_digest(root)
    workflow = ConfigWorkflow(
        config_file=[str(root / "configs" / name) for name in configs],
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type="train",
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() == [], f"{root.name}: missing train properties"
    workflow.run()
    workflow.finalize()
    assert folder_digest(root) == before, f"{root.name}: training wrote into the bundle folder"
    return workflow
