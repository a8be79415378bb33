"""Output writers: PNG + grid, NIfTI with affine, sidecars, atomic, rerun fills only what is missing."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medgen_monai.io import OutputWriter, image_grid, to_uint8


def test_png_sidecar_and_grid(tmp_path):
    writer = OutputWriter(tmp_path, formats="png", bundle={"name": "ldm_label_derm", "version": "0.1.0"})
    images = torch.linspace(0, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    records = [{"id": "MEL_0000", "seed": 0, "category": "MEL"}, {"id": "NV_0001", "seed": 1, "category": "NV"}]
    paths = writer.write(images, records)
    png = np.asarray(Image.open(paths[0]["png"]))
    np.testing.assert_array_equal(png, to_uint8(images[0]))
    sidecar = json.loads(paths[1]["sidecar"].read_text())
    assert sidecar["bundle"]["name"] == "ldm_label_derm" and sidecar["seed"] == 1 and sidecar["category"] == "NV"
    assert sidecar["files"] == {"png": "NV_0001.png"}
    grid = np.asarray(Image.open(writer.write_grid()))
    assert grid.shape == (2 + 8 + 2, 2 + 2 * (8 + 2), 3)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_rerun_fills_only_what_is_missing(tmp_path):
    records = [{"id": f"s{i}", "seed": i} for i in range(3)]
    writer = OutputWriter(tmp_path, formats=["png", "nifti"])
    assert writer.pending(records) == records
    writer.write(torch.rand(2, 1, 8, 8), records[:2])
    (tmp_path / "s1.json").unlink()  # a run killed before the sidecar: the sample counts as missing
    assert [r["id"] for r in writer.pending(records)] == ["s1", "s2"]
    with pytest.raises(ValueError, match="unique"):
        writer.pending(records + records[:1])


def test_nifti_keeps_the_affine(tmp_path):
    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 2]
    writer = OutputWriter(tmp_path, formats="nifti", affine=affine)
    volume = torch.rand(1, 1, 6, 5, 4)
    path = writer.write(volume, [{"id": "vol", "seed": 0}])[0]["nifti"]
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_allclose(image.get_fdata(), volume[0, 0].numpy(), rtol=1e-6)
    assert image.header.get_zooms() == pytest.approx((0.5, 0.6, 3.0))
    assert json.loads((tmp_path / "vol.json").read_text())["affine"] == affine.tolist()
    grid = writer.write_grid()
    assert grid is not None and np.asarray(Image.open(grid)).shape == (
        2 + 5 + 2,
        2 + 6 + 2,
    )  # middle axial slice: Y rows, X columns


@pytest.mark.parametrize(
    "kwargs, message",
    [({"formats": "jpeg"}, "unknown"), ({"value_range": (1, 0)}, "value_range"), ({"affine": np.eye(3)}, "4x4")],
)
def test_writer_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OutputWriter(tmp_path, **kwargs)


def test_writer_rejects_bad_records_and_shapes(tmp_path):
    writer = OutputWriter(tmp_path)
    with pytest.raises(ValueError, match="'id' and 'seed'"):
        writer.write(torch.rand(1, 1, 8, 8), [{"id": "a"}])
    with pytest.raises(ValueError, match="may only use"):
        writer.write(torch.rand(1, 1, 8, 8), [{"id": "../a", "seed": 0}])
    with pytest.raises(ValueError, match="2 records for 1 images"):
        writer.write(torch.rand(1, 1, 8, 8), [{"id": "a", "seed": 0}, {"id": "b", "seed": 1}])
    with pytest.raises(ValueError, match="png output needs 2D"):
        writer.write(torch.rand(1, 1, 8, 8, 8), [{"id": "a", "seed": 0}])
    with pytest.raises(ValueError, match="one shape"):
        image_grid([np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)])


def test_radiological_axial_puts_the_patients_right_on_the_viewers_left():
    from medgen_monai.io.writers import radiological_axial

    volume = np.zeros((8, 6, 4), dtype=np.uint8)
    volume[7, 0, 2] = 1  # the patient's far right (high X in RAS), posterior (low Y)
    volume[0, 5, 1] = 2  # the patient's far left, anterior, another slice
    assert radiological_axial(volume, 2)[5, 0] == 1  # bottom-left: posterior, viewer's left
    assert radiological_axial(volume, 1)[0, 7] == 2  # top-right: anterior, viewer's right
    assert radiological_axial(volume).shape == (6, 8)
