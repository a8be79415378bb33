"""One volume loader: a lesion on the patient's left is read as left through every entry point.

Two prostate phantoms (default size, the audit network's), one with a large PI-RADS 5 lesion forced to the
patient's left and one to the right, are written by every writer the project has (the PI-CAI ``.mha`` of the
dataset writer; NIfTI and DICOM MR series of :class:`OutputWriter`, each once in RAS voxel order and once in the
LPS voxel order of a scanner's axial series, which is the same image in space) together with their lesion masks,
then read back through :func:`load_volume`, the PI-CAI reader's records and ``evaluation.load_images``. "Read as
left" is checked on geometry (the lesion mask's centroid has a low RAS index ``i`` and a negative RAS x, and the
image is dark there) and by the shipped prostate audit network. Without the reorientation to RAS the ``.mha`` and
the LPS-stored files come back with left and right swapped, and these tests fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medgen_monai.data.picai import read as read_picai
from medgen_monai.data.picai import write as write_picai
from medgen_monai.data.picai import write_mha
from medgen_monai.errors import InputError
from medgen_monai.io import OutputWriter
from medgen_monai.io.volumes import load_volume
from medgen_monai.metrics.evaluation import load_images
from medgen_monai.phantoms import get_phantom

SEED = 7  # a "training"-range dataset seed (medgen_monai.phantoms.seeds)
SIDES = ("left", "right")
LESION = {"lesion": "present", "zone": "peripheral", "level": "mid", "size": "large", "pirads": "5"}
BUNDLE = {"name": "test_volumes", "version": "0", "weights_sha256": "0" * 64}
#: the NIfTI / DICOM storages: the writer's own RAS order, and a scanner's axial LPS order (ImageOrientationPatient
#: 1,0,0,0,1,0: columns towards the patient's Left, rows towards Posterior)
STORAGES = ("ras", "lps")


def ras_affine(shape, spacing) -> np.ndarray:
    """The phantom's voxel -> RAS affine: voxel centres at ``(i - (X - 1) / 2) * sx`` etc. (centred on 0)."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * float(s) for n, s in zip(shape, spacing)]
    return affine


def lps_storage(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored in LPS voxel order (X and Y reversed) with the affine that says so."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [volume.shape[0] - 1, volume.shape[1] - 1]  # voxel i' = X - 1 - i
    return np.ascontiguousarray(volume[::-1, ::-1, :]), affine @ flip


@pytest.fixture(scope="module")
def cases():
    prostate = get_phantom("prostate")
    return {
        side: prostate.generate(index, seed=SEED, attributes={**LESION, "side": side})
        for index, side in enumerate(SIDES)
    }


@pytest.fixture(scope="module")
def written(cases, tmp_path_factory) -> dict[str, dict[str, tuple[Path, Path]]]:
    """entry -> side -> (image path, lesion mask path), for every writer and storage."""
    root = tmp_path_factory.mktemp("volumes")
    samples = [cases[side] for side in SIDES]
    out: dict[str, dict[str, tuple[Path, Path]]] = {}

    # (a) the PI-CAI dataset writer and reader; the masks through the writer's own .mha function
    records = read_picai(write_picai(samples, root / "picai"))
    out["picai"] = {}
    for side, sample, record in zip(SIDES, samples, records):
        assert record["attributes"]["side"] == side
        mask = write_mha(sample.masks["lesion"].astype(np.float32), sample.meta["spacing"], root / f"mask_{side}.mha")
        out["picai"][side] = (Path(record["image"]), mask)

    # (b, c) NIfTI and DICOM MR series of the output writer
    for storage in STORAGES:
        writer = OutputWriter(
            root / storage, formats=("nifti", "dicom"), bundle=BUNDLE, value_range=(0.0, 2.0), grid=False
        )
        volumes, records = [], []
        for side, sample in zip(SIDES, samples):
            affine = ras_affine(sample.images["t2w"].shape, sample.meta["spacing"])
            for what, volume in (("image", sample.images["t2w"]), ("mask", sample.masks["lesion"].astype(np.float32))):
                stored, stored_affine = (volume, affine) if storage == "ras" else lps_storage(volume, affine)
                volumes.append(stored[None])
                records.append({"id": f"{what}_{side}", "seed": SEED, "affine": stored_affine})
        paths = writer.write(np.stack(volumes), records)
        for fmt in ("nifti", "dicom"):
            out[f"{fmt}_{storage}"] = {side: (paths[2 * i][fmt], paths[2 * i + 1][fmt]) for i, side in enumerate(SIDES)}
    return out


@pytest.fixture(scope="module")
def audit():
    from medgen_monai.metrics import load_audit

    return load_audit("prostate_t2w")


def assert_on_side(side: str, image: np.ndarray, mask: np.ndarray, affine: np.ndarray, where: str) -> None:
    """The lesion of a RAS-ordered volume lies on the patient's ``side``: mask centroid at low (left) or high (right)
    index ``i`` and at negative (left) or positive (right) RAS x, and the image is dark there (PI-RADS 5) compared
    with the mirror image across the midline."""
    lesion = mask > 0.5
    assert lesion.sum() > 20, f"{where}: the lesion mask is (nearly) empty"
    centroid = np.argwhere(lesion).mean(axis=0)
    x_mm = (affine @ np.append(centroid, 1.0))[0]
    sign = -1 if side == "left" else 1
    assert sign * (centroid[0] - (mask.shape[0] - 1) / 2) > 3, f"{where}: centroid i = {centroid[0]:.1f}, not {side}"
    assert sign * x_mm > 4.0, f"{where}: centroid at RAS x = {x_mm:.1f} mm, not on the patient's {side}"
    mirror = lesion[::-1]
    assert image[lesion].mean() < 0.6 * image[mirror & ~lesion].mean(), f"{where}: the image is not dark at the lesion"


def test_phantom_arrays_are_ras(cases):
    """The in-memory convention the audit networks are trained on: left = low ``i`` = negative RAS x."""
    for side, sample in cases.items():
        affine = ras_affine(sample.images["t2w"].shape, sample.meta["spacing"])
        assert_on_side(side, sample.images["t2w"], sample.masks["lesion"], affine, f"phantom {side}")
        assert np.sign(sample.meta["lesion_centre_mm"][0]) == (-1 if side == "left" else 1)


def test_picai_mha_reads_as_left(cases, written):
    for side in SIDES:
        (image_path, mask_path), sample = written["picai"][side], cases[side]
        image, affine = load_volume(image_path)
        mask, mask_affine = load_volume(mask_path)
        assert image.dtype == np.float32 and image.shape == sample.images["t2w"].shape
        assert_on_side(side, image, mask, affine, f"picai {side}")
        np.testing.assert_array_equal(image, sample.images["t2w"])  # same RAS array as in memory
        np.testing.assert_allclose(affine, ras_affine(image.shape, sample.meta["spacing"]), atol=1e-4)
        np.testing.assert_allclose(mask_affine, affine, atol=1e-6)


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_writer_outputs_read_as_left(cases, written, fmt):
    """NIfTI and DICOM MR series, stored in RAS and in a scanner's LPS order: both read back as the same RAS array."""
    for storage in STORAGES:
        for side in SIDES:
            (image_path, mask_path), sample = written[f"{fmt}_{storage}"][side], cases[side]
            image, affine = load_volume(image_path)
            mask, _ = load_volume(mask_path)
            where = f"{fmt} stored {storage}, {side}"
            assert_on_side(side, image, mask, affine, where)
            np.testing.assert_allclose(image, sample.images["t2w"], atol=1e-4, err_msg=where)
            expected = ras_affine(image.shape, sample.meta["spacing"])
            np.testing.assert_allclose(affine, expected, atol=1e-3, err_msg=where)


def test_load_images_reads_as_left(cases, written, audit):
    """``evaluation.load_images`` (what every evaluation reads with) gives RAS arrays from every file kind, and the
    shipped prostate audit network reads the side the phantom was drawn with."""
    for entry, by_side in written.items():
        images = load_images([by_side[side][0] for side in SIDES])
        masks = load_images([by_side[side][1] for side in SIDES])
        for side, image, mask in zip(SIDES, images, masks):
            affine = ras_affine(image.shape, cases[side].meta["spacing"])
            assert_on_side(side, image, mask, affine, f"load_images {entry} {side}")
        assert audit.predict(images)["side"] == list(SIDES), entry


def test_audit_reads_in_memory_sides(cases, audit):
    """The control: the audit network is right on the in-memory arrays, and flipping them left-right flips its
    answer (so the reading tests above would catch a swap)."""
    arrays = [cases[side].images["t2w"] for side in SIDES]
    assert audit.predict(arrays)["side"] == list(SIDES)
    assert audit.predict([np.ascontiguousarray(a[::-1]) for a in arrays])["side"] == list(SIDES[::-1])


def test_load_volume_bad_input(written, tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: volume: .*does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "notes.txt").write_text("not a volume\n")
    with pytest.raises(InputError, match=r"notes\.txt: volume: a volume file \(\.nii, \.nii\.gz, \.mha, \.mhd\)"):
        load_volume(tmp_path / "notes.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"broken\.nii\.gz: nifti: a readable nifti volume"):
        load_volume(tmp_path / "broken.nii.gz")
    (tmp_path / "broken.mha").write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match=r"broken\.mha: metaimage: a readable metaimage volume"):
        load_volume(tmp_path / "broken.mha")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: nifti: a single-channel 3D volume \(X, Y, Z\), .*\(4, 5\)"):
        load_volume(tmp_path / "flat.nii.gz")
    (tmp_path / "empty_series").mkdir()
    with pytest.raises(InputError, match=r"empty_series: series: DICOM image files"):  # DicomError is an InputError
        load_volume(tmp_path / "empty_series")
    with pytest.raises(ValueError, match=r"notes\.txt: volume"):  # load_images passes the same error on
        load_images([tmp_path / "notes.txt"])
