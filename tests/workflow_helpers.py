"""MONAI's own workflow API on a bundle: ``create_workflow(workflow_type="infer")``, its property check, a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.bundle import create_workflow


def run_infer_workflow(root: Path, **overrides: Any) -> Any:
    """Build ``root``'s inference workflow with MONAI's ``create_workflow``, check that no inference property is
    missing, run it (``initialize``, ``run``, ``finalize``) and return the workflow."""
    workflow = create_workflow(config_file=str(root / "configs" / "inference.json"),
                               meta_file=str(root / "configs" / "metadata.json"), workflow_type="infer",
                               bundle_root=str(root), **overrides)
    assert workflow.check_properties() == [], f"{root.name}: missing inference properties"
    # the properties MONAI Label and the workflow API read, by name
    for name in ("bundle_root", "device", "dataset_dir", "dataset", "evaluator", "network_def", "inferer"):
        assert getattr(workflow, name) is not None, f"{root.name}: property {name} is None"
    workflow.run()
    workflow.finalize()
    return workflow
