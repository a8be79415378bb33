"""Output writers shared by every bundle: PNG (+ a grid), NIfTI with its affine, and a JSON sidecar
per output. Every file is written to a temporary name and renamed, and a rerun into the same folder
writes only what is missing (:meth:`OutputWriter.pending`).

Sidecar (``<id>.json``, one per output): the bundle (name, version, sha256 of its weights), the
seed, the sampler settings, the category, the description or report used, the predicted class, the
files written, the DICOM UIDs written, and whatever else the bundle put in the record.

DICOM (``dicom``; :mod:`medgen_monai.io.dicom`): a 2D output is a Secondary Capture ``<id>.dcm`` (the PNG's pixels),
a 3D output an MR series folder ``<id>_dcm/`` (one file per slice, the record's or the writer's affine), a record's
``"report"`` text also a Basic Text SR ``<id>_report.dcm``. One synthetic patient and one study per output folder,
kept in ``dicom_study.json`` so that a rerun filling in missing outputs stays in the same study; the 2D images share
one series and the reports another, instance numbers in write order; each volume is a series of its own.

:class:`StreamOutputWriter` writes a multi-stream bundle's outputs (MedCoDi-M: views and a report per request), with
one synthetic study per request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_text

__all__ = [
    "FORMATS",
    "DICOM_STUDY_FILE",
    "STREAM_KINDS",
    "safe_id",
    "save_image_2d",
    "to_uint8",
    "image_grid",
    "radiological_axial",
    "OutputWriter",
    "StreamOutputWriter",
]

#: output formats the writer knows.
FORMATS = ("png", "nifti", "dicom")

#: per-folder DICOM state: the synthetic patient, the study, series UIDs and the next instance numbers.
DICOM_STUDY_FILE = "dicom_study.json"

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def safe_id(text: str) -> str:
    """``text`` as a file stem the writers accept: every character outside ``[A-Za-z0-9._-]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def save_image_2d(array: np.ndarray, path: str | Path, quality: int = 95) -> Path:
    """Save a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG or JPEG (by suffix), atomically.

    JPEG uses fixed quality, no chroma subsampling and no optimisation passes, so output is
    byte-identical for identical input.
    """
    from PIL import Image

    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a uint8 (H, W) or (H, W, 3) array, got {array.dtype} {array.shape}")
    path = Path(path)
    image = Image.fromarray(array)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.save(tmp, format="JPEG", quality=quality, subsampling=0)
        else:
            image.save(tmp, format="PNG")
    return path


def to_uint8(image: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A channel-first 2D image ``(C, H, W)`` with C in {1, 3} -> uint8 ``(H, W)`` or ``(H, W, 3)``.

    Values are mapped linearly from ``value_range`` to 0..255 and clipped.
    """
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) image with 1 or 3 channels, got shape {array.shape}")
    low, high = value_range
    scaled = np.clip((array - low) / (high - low), 0.0, 1.0)
    out = np.round(scaled * 255.0).astype(np.uint8)
    return out[0] if out.shape[0] == 1 else np.ascontiguousarray(out.transpose(1, 2, 0))


def image_grid(images: Sequence[np.ndarray], columns: int = 8, pad: int = 2) -> np.ndarray:
    """Tile uint8 ``(H, W)`` / ``(H, W, 3)`` images of one size into one uint8 image (grey goes RGB if mixed)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    rgb = any(im.ndim == 3 for im in images)
    tiles = [np.repeat(im[..., None], 3, axis=2) if rgb and im.ndim == 2 else im for im in images]
    shapes = {t.shape for t in tiles}
    if len(shapes) != 1:
        raise ValueError(f"image_grid needs images of one shape, got {sorted(shapes)}")
    height, width = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * (height + pad) + pad, columns * (width + pad) + pad, *tiles[0].shape[2:]), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        grid[y : y + height, x : x + width] = tile
    return grid


def radiological_axial(volume: np.ndarray, z: int | None = None) -> np.ndarray:
    """Axial slice ``z`` (default: the middle) of an ``(X, Y, Z)`` RAS volume in radiological display.

    RAS voxel order puts the patient's right at high ``X`` and anterior at high ``Y``; the
    radiological convention shows the patient's right on the viewer's LEFT and anterior at the top.

    Returns:
        ``(Y, X)`` array, same dtype: row 0 anterior, column 0 the patient's right.
    """
    z = volume.shape[2] // 2 if z is None else int(z)
    return volume[::-1, ::-1, z].T


class OutputWriter:
    """Writes generated samples, one sidecar each, into ``output_dir``.

    Args:
        output_dir: folder (created).
        formats: any of :data:`FORMATS`; PNG needs 2D images (3D volumes get a PNG of the middle axial slice only
            in the grid), NIfTI takes 2D or 3D.
        bundle: what every sidecar records about the model: ``{"name", "version", "weights_sha256", ...}``.
        value_range: intensity range of the generated images (mapped to 0..255 for PNG).
        affine: ``(4, 4)`` voxel-to-RAS affine for NIfTI (default identity, i.e. 1 mm voxels);
            a record's ``"affine"`` overrides it.
        grid: also write ``grid.png`` with every sample of the run (:meth:`write_grid`).
        dicom: DICOM options: ``{"patient_id_prefix": "SYN", "reference": {keyword: value}}``; the reference holds
            allow-listed attributes of a conditioning input (:func:`medgen_monai.io.dicom.deidentified_reference`).

    Each record is a dict with at least ``"id"`` (file stem; letters, digits, ``.``, ``_``, ``-``) and ``"seed"``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        formats: Sequence[str] | str = ("png",),
        bundle: Mapping[str, Any] | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        affine: Sequence[Sequence[float]] | np.ndarray | None = None,
        grid: bool = True,
        dicom: Mapping[str, Any] | None = None,
    ) -> None:
        formats = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
        unknown = [f for f in formats if f not in FORMATS]
        if not formats or unknown:
            raise ValueError(f"formats: unknown {unknown or formats}; expected some of {list(FORMATS)}")
        if len(value_range) != 2 or value_range[1] <= value_range[0]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {self.affine.shape}")
        self.output_dir = Path(output_dir)
        self.formats = formats
        self.bundle = dict(bundle or {})
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.grid = grid
        self.dicom = _dicom_options(dicom)
        self._grid_tiles: list[np.ndarray] = []

    # ---- paths -------------------------------------------------------------------------------
    @staticmethod
    def _id(record: Mapping[str, Any]) -> str:
        if "id" not in record or "seed" not in record:
            raise ValueError(f"an output record needs 'id' and 'seed', got keys {sorted(record)}")
        identifier = str(record["id"])
        if not _SAFE_ID.match(identifier):
            raise ValueError(f"output id {identifier!r} may only use letters, digits, '.', '_' and '-'")
        return identifier

    def paths(self, record: Mapping[str, Any], ndim: int | None = None) -> dict[str, Path]:
        """Files of one record: each format plus ``"sidecar"`` (and ``"dicom_report"`` for a record with a report).

        ``ndim`` (4: 2D batch, 5: 3D) picks the DICOM path, ``<id>.dcm`` or the folder ``<id>_dcm``; unknown, the
        folder is assumed when it exists.
        """
        stem = self.output_dir / self._id(record)
        suffixes = {"png": ".png", "nifti": ".nii.gz", "dicom": ".dcm"}
        if ndim == 5 or (ndim is None and stem.with_name(stem.name + "_dcm").is_dir()):
            suffixes["dicom"] = "_dcm"
        paths = {fmt: stem.with_name(stem.name + suffixes[fmt]) for fmt in self.formats}
        if "dicom" in self.formats and record.get("report"):
            paths["dicom_report"] = stem.with_name(stem.name + "_report.dcm")
        paths["sidecar"] = stem.with_name(stem.name + ".json")
        return paths

    def is_done(self, record: Mapping[str, Any]) -> bool:
        """All files of the record exist (the sidecar is written last, so its presence means complete)."""
        return all(p.exists() for p in self.paths(record).values())

    def pending(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The records whose outputs are not all there yet (a rerun fills only these)."""
        ids = [self._id(r) for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("output records must have unique ids")
        return [r for r in records if not self.is_done(r)]

    # ---- writing -----------------------------------------------------------------------------
    def _write_nifti(self, array: np.ndarray, affine: np.ndarray, path: Path) -> None:
        import nibabel as nib

        # channel-first (C, ...) -> nibabel's spatial-first layout; one channel is dropped
        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
        image = nib.Nifti1Image(data.astype(np.float32), affine)
        image.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            nib.save(image, str(tmp))

    def write(self, images: torch.Tensor | np.ndarray, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Path]]:
        """Write a batch.

        Args:
            images: ``(B, C, H, W)`` or ``(B, C, X, Y, Z)`` in ``value_range``.
            records: ``B`` records (see the class docstring); everything in them goes into the sidecar.

        Returns:
            the paths written per record.
        """
        array = (
            images.detach().float().cpu().numpy()
            if isinstance(images, torch.Tensor)
            else np.asarray(images, np.float32)
        )
        if array.ndim not in (4, 5):
            raise ValueError(f"images must be (B, C, H, W) or (B, C, X, Y, Z), got shape {array.shape}")
        if len(records) != array.shape[0]:
            raise ValueError(f"got {len(records)} records for {array.shape[0]} images")
        if "png" in self.formats and array.ndim == 5:
            raise ValueError("png output needs 2D images; write 3D volumes as nifti (or dicom)")
        if "dicom" in self.formats and array.ndim == 5 and array.shape[1] != 1:
            raise ValueError(f"dicom output of a 3D volume needs one channel, got {array.shape[1]}")
        written = []
        for image, record in zip(array, records):
            paths = self.paths(record, array.ndim)
            display = None
            if array.ndim == 4:
                display = to_uint8(image, self.value_range)
            else:
                low, high = self.value_range
                display = radiological_axial(
                    np.round(np.clip((image[0] - low) / (high - low), 0, 1) * 255).astype(np.uint8)
                )
            if "png" in self.formats:
                save_image_2d(display, paths["png"])
            if "nifti" in self.formats:
                affine = np.asarray(record.get("affine", self.affine), dtype=np.float64)
                self._write_nifti(image, affine, paths["nifti"])
            dicom_uids = self._write_dicom(image, display, record, paths) if "dicom" in self.formats else None
            sidecar = {
                "bundle": self.bundle,
                **{k: v for k, v in record.items() if k != "affine"},
                "files": {fmt: p.name for fmt, p in paths.items() if fmt != "sidecar"},
            }
            if "nifti" in self.formats or ("dicom" in self.formats and array.ndim == 5):
                sidecar["affine"] = np.asarray(record.get("affine", self.affine)).tolist()
            if dicom_uids is not None:
                sidecar["dicom"] = dicom_uids
            atomic_write_text(paths["sidecar"], json.dumps(sidecar, indent=2, default=_json_default) + "\n")
            self._grid_tiles.append(display)
            written.append(paths)
        return written

    # ---- DICOM -------------------------------------------------------------------------------
    def _dicom_state(self) -> dict[str, Any]:
        """The folder's synthetic patient and study (``dicom_study.json``), created on first use."""
        from .dicom import DicomStudyIds, synthetic_patient

        path = self.output_dir / DICOM_STUDY_FILE
        if path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
                for key in ("images", "reports"):
                    DicomStudyIds.from_dict(state[key])
                    int(state[key]["next_instance_number"])
                int(state["next_series_number"])
                if not str(state["patient"]["PatientName"]).startswith("SYNTHETIC"):
                    raise ValueError("the patient is not synthetic")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}: expected the DICOM study of this folder as OutputWriter writes it ({e}); "
                    "remove it to start a new study"
                ) from None
            if state.get("options") != self.dicom:
                raise ValueError(
                    f"{path}: the folder's DICOM study was written with {state.get('options')}, not "
                    f"{self.dicom}; write into a new folder"
                )
            return state
        images = DicomStudyIds.new(series_number=1)
        state = {
            "options": self.dicom,
            "patient": {**synthetic_patient(self.dicom["patient_id_prefix"]), **self.dicom["reference"]},
            "images": {**images.to_dict(), "next_instance_number": 1},
            "reports": {**images.new_series(2).to_dict(), "next_instance_number": 1},
            "next_series_number": 3,
        }
        self._save_dicom_state(state)
        return state

    def _save_dicom_state(self, state: Mapping[str, Any]) -> None:
        atomic_write_text(self.output_dir / DICOM_STUDY_FILE, json.dumps(state, indent=2) + "\n")

    def _write_dicom(
        self, image: np.ndarray, display: np.ndarray, record: Mapping[str, Any], paths: Mapping[str, Path]
    ) -> dict[str, Any]:
        """Write the record's DICOM files; returns the UIDs written (for the sidecar)."""
        import pydicom

        from .dicom import DicomStudyIds, Provenance, write_basic_text_sr, write_mr_series, write_secondary_capture

        state = self._dicom_state()
        provenance = Provenance.from_bundle(self.bundle, int(record["seed"]))
        description = f"SYNTHETIC {provenance.bundle}"[:64]
        patient = state["patient"]
        if image.ndim == 3:  # (C, H, W): the PNG's pixels
            series = state["images"]
            instance = int(series["next_instance_number"])
            series["next_instance_number"] = instance + 1
            self._save_dicom_state(state)
            files = [
                write_secondary_capture(
                    display,
                    paths["dicom"],
                    provenance,
                    patient,
                    instance_number=instance,
                    study=DicomStudyIds.from_dict(series),
                    series_description=description,
                )
            ]
        else:  # (1, X, Y, Z)
            study = DicomStudyIds.from_dict(state["images"]).new_series(int(state["next_series_number"]))
            state["next_series_number"] += 1
            self._save_dicom_state(state)
            affine = np.asarray(record.get("affine", self.affine), dtype=np.float64)
            files = write_mr_series(
                image[0],
                affine,
                paths["dicom"],
                provenance,
                patient,
                study=study,
                value_range=self.value_range,
                series_description=f"{description} {record['id']}"[:64],
            )
        headers = [
            pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SeriesInstanceUID"])
            for f in files
        ]
        uids: dict[str, Any] = {
            "patient_id": patient["PatientID"],
            "study_uid": state["images"]["study_uid"],
            "series_uid": str(headers[0].SeriesInstanceUID),
            "sop_instance_uids": [str(h.SOPInstanceUID) for h in headers],
        }
        if "dicom_report" in paths:
            series = state["reports"]
            instance = int(series["next_instance_number"])
            series["next_instance_number"] = instance + 1
            self._save_dicom_state(state)
            report = write_basic_text_sr(
                str(record["report"]),
                paths["dicom_report"],
                provenance,
                patient,
                study=DicomStudyIds.from_dict(series),
                instance_number=instance,
                series_description=f"SYNTHETIC {provenance.bundle} report"[:64],
            )
            uids["report"] = {
                "series_uid": series["series_uid"],
                "sop_instance_uid": str(pydicom.dcmread(report, stop_before_pixels=True).SOPInstanceUID),
            }
        return uids

    def write_grid(self, columns: int = 8, name: str = "grid.png") -> Path | None:
        """Tile every image written in this run into ``name`` (nothing when none was written or grid is off)."""
        if not self.grid or not self._grid_tiles:
            return None
        return save_image_2d(image_grid(self._grid_tiles, columns), self.output_dir / name)


def _dicom_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"patient_id_prefix": str, "reference": {allow-listed keyword: str}}``, checked."""
    from .dicom import ALLOWED_FROM_INPUT, synthetic_patient

    options = dict(options or {})
    unknown = sorted(set(options) - {"patient_id_prefix", "reference"})
    if unknown:
        raise ValueError(f"dicom: unknown options {unknown}; expected 'patient_id_prefix' and/or 'reference'")
    prefix = options.get("patient_id_prefix", "SYN")
    synthetic_patient(prefix)  # checks the prefix
    reference = dict(options.get("reference") or {})
    not_allowed = sorted(set(reference) - set(ALLOWED_FROM_INPUT))
    if not_allowed or not all(isinstance(v, str) for v in reference.values()):
        raise ValueError(
            f"dicom.reference: {not_allowed or reference} not allowed; expected string values of "
            f"{list(ALLOWED_FROM_INPUT)} (from medgen_monai.io.dicom.deidentified_reference)"
        )
    return {"patient_id_prefix": prefix, "reference": reference}


def is_file_input(value: Any) -> bool:
    """Whether a request input names an existing file (a view image) rather than being text (a report, which may be
    too long to be a path at all)."""
    try:
        return isinstance(value, (str, Path)) and "\n" not in str(value) and Path(value).is_file()
    except OSError:
        return False


def _input_summary(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What a sidecar records of a request's inputs: a text as it is (reports reach a bundle de-identified: pacs-run
    scrubs them), an image file by its SHA-256 only (its path may name the patient), an array by its shape."""
    from .weights import file_sha256

    summary: dict[str, Any] = {}
    for modality, value in inputs.items():
        if is_file_input(value):
            summary[modality] = {"file_sha256": file_sha256(value)}
        elif isinstance(value, str):
            summary[modality] = value
        else:
            summary[modality] = {"array_shape": list(np.shape(value))}
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a JSON sidecar")


#: what a stream of a multi-stream bundle produces
STREAM_KINDS = ("image", "text")


class StreamOutputWriter(OutputWriter):
    """Writes what a multi-stream bundle (MedCoDi-M) generates for each request: any of its streams.

    Per request (``record["outputs"]`` names the generated streams): ``<id>_<stream>.png`` for an image stream,
    ``<id>_<stream>.txt`` for a text stream, and one sidecar ``<id>.json`` (the record, the generated texts, the
    files). With ``dicom``: one synthetic study per request in ``<id>_dcm/``: each generated view a Secondary
    Capture of its own series with its view position and patient orientation, the generated report a Basic Text
    SR; all marked synthetic.

    Args:
        output_dir: folder (created).
        streams: stream name -> ``{"kind": "image" | "text", "view_position": "PA", "patient_orientation":
            ["L", "F"]}`` (the last two for image streams, both optional).
        postprocess: applied to the sampler's decoded outputs ``{stream: ...}`` before writing (e.g.
            :class:`~medgen_monai.transforms.DecodeReportd`, which turns a report's token ids into text); after it,
            an image stream is ``(B, C, H, W)`` in ``value_range`` and a text stream a list of ``B`` strings.
        formats: ``png`` and/or ``dicom`` (texts are always written as ``.txt``).
        bundle, value_range, grid, dicom: as :class:`OutputWriter`.
    """

    def __init__(
        self,
        output_dir: str | Path,
        streams: Mapping[str, Mapping[str, Any]],
        postprocess: Any = None,
        formats: Sequence[str] | str = ("png",),
        bundle: Mapping[str, Any] | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        grid: bool = True,
        dicom: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(output_dir, formats, bundle, value_range, grid=grid, dicom=dicom)
        if "nifti" in self.formats:
            raise ValueError("formats: a multi-stream bundle writes png and/or dicom (its views are 2D)")
        if not streams:
            raise ValueError("streams: name at least one stream and its kind")
        self.streams = {}
        for name, spec in streams.items():
            spec = dict(spec)
            if spec.get("kind") not in STREAM_KINDS or not _SAFE_ID.match(str(name)):
                raise ValueError(f"streams[{name!r}]: expected a plain name and kind in {STREAM_KINDS}, got {spec}")
            self.streams[str(name)] = spec
        if postprocess is not None and not callable(postprocess):
            raise ValueError(f"postprocess must be callable (a MONAI transform), got {type(postprocess).__name__}")
        self.postprocess = postprocess

    def _outputs(self, record: Mapping[str, Any]) -> list[str]:
        outputs = record.get("outputs")
        if not outputs or isinstance(outputs, str) or any(o not in self.streams for o in outputs):
            raise ValueError(
                f"record {record.get('id')!r}: 'outputs' must list generated streams of "
                f"{list(self.streams)}, got {outputs!r}"
            )
        return list(outputs)

    def paths(self, record: Mapping[str, Any], ndim: int | None = None) -> dict[str, Path]:
        """Files of one record: ``<stream>`` (PNG or text) per generated stream, ``"dicom"`` (the study folder) and
        ``"sidecar"``."""
        stem = self.output_dir / self._id(record)
        paths = {}
        for stream in self._outputs(record):
            if self.streams[stream]["kind"] == "text":
                paths[stream] = stem.with_name(f"{stem.name}_{stream}.txt")
            elif "png" in self.formats:
                paths[stream] = stem.with_name(f"{stem.name}_{stream}.png")
        if "dicom" in self.formats:
            paths["dicom"] = stem.with_name(stem.name + "_dcm")
        paths["sidecar"] = stem.with_name(stem.name + ".json")
        return paths

    def write(self, outputs: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> list[dict[str, Path]]:  # type: ignore[override]
        """Write a batch: ``outputs`` (the sampler's decoded streams, before ``postprocess``) for ``records``."""
        if not isinstance(outputs, Mapping):
            raise ValueError(f"outputs must map stream names to decoded batches, got {type(outputs).__name__}")
        outputs = dict(self.postprocess(dict(outputs)) if self.postprocess is not None else outputs)
        written = []
        for i, record in enumerate(records):
            wanted = self._outputs(record)
            missing = [s for s in wanted if s not in outputs]
            if missing:
                raise ValueError(f"record {record.get('id')!r}: no generated {missing} (have {sorted(outputs)})")
            paths = self.paths(record)
            texts, displays = {}, {}
            for stream in wanted:
                value = outputs[stream][i]
                if self.streams[stream]["kind"] == "text":
                    if not isinstance(value, str):
                        raise ValueError(
                            f"stream {stream!r} must be text after postprocess, got {type(value).__name__}"
                        )
                    texts[stream] = value
                    atomic_write_text(paths[stream], value + "\n")
                else:
                    image = (
                        value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                    )
                    if image.ndim != 3:
                        raise ValueError(f"stream {stream!r} must give (C, H, W) images, got {image.shape}")
                    displays[stream] = to_uint8(image, self.value_range)
                    if stream in paths:
                        save_image_2d(displays[stream], paths[stream])
            sidecar = {
                "bundle": self.bundle,
                **record,
                "inputs": _input_summary(record.get("inputs") or {}),
                "generated": texts,
                "files": {k: p.name for k, p in paths.items() if k != "sidecar"},
            }
            if "dicom" in self.formats:
                sidecar["dicom"] = self._write_study(displays, texts, record, paths["dicom"])
            atomic_write_text(paths["sidecar"], json.dumps(sidecar, indent=2, default=_json_default) + "\n")
            if displays:
                self._grid_tiles.append(np.concatenate(list(displays.values()), axis=1))
            written.append(paths)
        return written

    def _write_study(
        self, displays: Mapping[str, np.ndarray], texts: Mapping[str, str], record: Mapping[str, Any], folder: Path
    ) -> dict[str, Any]:
        """One synthetic study (a fresh synthetic patient) holding the record's generated views and reports."""
        import pydicom

        from .atomic import atomic_folder
        from .dicom import DicomStudyIds, Provenance, synthetic_patient, write_basic_text_sr, write_secondary_capture

        provenance = Provenance.from_bundle(self.bundle, int(record["seed"]))
        patient = {**synthetic_patient(self.dicom["patient_id_prefix"]), **self.dicom["reference"]}
        study = DicomStudyIds.new(series_number=1)
        uids: dict[str, Any] = {"patient_id": patient["PatientID"], "study_uid": study.study_uid, "series": {}}
        with atomic_folder(folder) as tmp:
            for number, (stream, display) in enumerate(displays.items(), start=1):
                spec = self.streams[stream]
                series = study.new_series(number)
                path = write_secondary_capture(
                    display,
                    tmp / f"{stream}.dcm",
                    provenance,
                    patient,
                    study=series,
                    series_description=(
                        f"SYNTHETIC {provenance.bundle} {stream} {spec.get('view_position', '')}"
                    ).strip()[:64],
                    patient_orientation=spec.get("patient_orientation"),
                    view_position=spec.get("view_position"),
                )
                uids["series"][stream] = {"series_uid": series.series_uid, "file": path.name}
            for number, (stream, text) in enumerate(texts.items(), start=len(displays) + 1):
                if not text.strip():
                    continue  # an empty generated report is kept in the .txt and the sidecar, not as an SR
                series = study.new_series(number)
                path = write_basic_text_sr(
                    text,
                    tmp / f"{stream}.dcm",
                    provenance,
                    patient,
                    study=series,
                    series_description=f"SYNTHETIC {provenance.bundle} {stream}"[:64],
                )
                uids["series"][stream] = {"series_uid": series.series_uid, "file": path.name}
            for entry in uids["series"].values():
                ds = pydicom.dcmread(tmp / entry["file"], stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                entry["sop_instance_uid"] = str(ds.SOPInstanceUID)
        return uids
