"""JSON schemas shipped with the package (nothing is downloaded at run time).

``BUNDLE_METADATA_SCHEMA`` validates a bundle's ``configs/metadata.json`` with MONAI's own tool::

    python -m monai.bundle verify_metadata --meta_file bundles/ldm_label_derm/configs/metadata.json \\
        --filepath "$(python -c 'from medgen_monai.schemas import BUNDLE_METADATA_SCHEMA as s; print(s)')"

It encodes the MONAI Bundle Specification's rules for ``metadata.json`` (Project-MONAI/MONAI,
``docs/source/mb_specification.rst``, Apache-2.0): the mandatory keys, tensor format specifiers whose ``type`` is one
of the specification's four, and the model zoo's latent diffusion data formats. MONAI's own schema files are release
assets of Project-MONAI/MONAI-extra-test-data that cannot be fetched here; ``verify_metadata`` uses the file at
``--filepath`` when it exists and downloads only when it does not.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLE_METADATA_SCHEMA"]

#: the metadata schema file (JSON Schema 2020-12)
BUNDLE_METADATA_SCHEMA: Path = Path(__file__).with_name("bundle_metadata.json")
