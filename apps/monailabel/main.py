"""A MONAI Label app that serves the medgen-monai bundles as infer tasks (one per bundle that ships its weights).

Start it with MONAI Label's server (docs/monai.md, "MONAI Label", says how to install monailabel beside the
project)::

    monailabel start_server --app apps/monailabel --studies <a folder> [--conf models ldm_label_derm,...]

``--conf`` keys: ``bundles`` (the folder of bundle folders; default the repository's ``bundles/``), ``models`` (the
bundles to serve, comma-separated; default all with weights), ``output_dir`` (where generated images and sidecars
are kept; default ``<app>/generated``), ``max_outputs`` (the most outputs one request may make; default 16).

The tasks are :mod:`medgen_monai.integrations.monailabel`'s ``GenerationInferTask``: a request carries what to
generate (``category``, ``prompt``, ``report``, ``n``, ``seed``, ``num_inference_steps``, ...), not an image to
segment, so :meth:`MedGenApp.infer` takes a request without ``image``, never saves the generated image as a
label of a datastore image, and answers a bad field with HTTP 400 and the message naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monailabel.interfaces.app import MONAILabelApp

import medgen_monai
from medgen_monai.integrations.monailabel import infer_tasks

__all__ = ["MedGenApp"]

REPOSITORY = Path(__file__).resolve().parents[2]


class MedGenApp(MONAILabelApp):
    """The bundles under ``conf["bundles"]`` as MONAI Label infer tasks, by bundle folder name."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        self.bundles_dir = Path(conf.get("bundles") or REPOSITORY / "bundles")
        self.output_dir = Path(conf.get("output_dir") or Path(app_dir) / "generated")
        self.models = conf.get("models") or None
        try:
            self.max_outputs = int(conf.get("max_outputs", 16))
        except ValueError:
            raise ValueError(f"max_outputs: expected an integer, got {conf['max_outputs']!r}") from None
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="medgen-monai",
            description="Synthetic medical images from the medgen-monai generator bundles",
            version=medgen_monai.__version__,
        )

    def init_infers(self) -> dict[str, Any]:
        return infer_tasks(self.bundles_dir, self.output_dir, names=self.models, max_outputs=self.max_outputs)

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        # MONAI Label's infer reads request["image"]; a generation request needs none, and the generated image is
        # not a label of whatever datastore image a client sends along
        try:
            return super().infer({"image": "", **request, "save_label": False}, datastore)
        except ValueError as e:  # a bad request field: the client gets 400 and the message, not a bare 500
            from fastapi import HTTPException

            raise HTTPException(status_code=400, detail=str(e)) from e
