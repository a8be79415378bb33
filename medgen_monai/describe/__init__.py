"""MLLM description generation for VAP-Diffusion: prompts, backends, validation, the description bank.

- :mod:`.tasks`: the describe tasks (``derm``, ``colon``, ``cxr``): vocabulary, categories, class constraints,
  the oracle's description writer;
- :mod:`.prompts`: the chain-of-thought prompt as chat messages;
- :mod:`.validation`: parsing and checking an answer (every rejection keeps its reasons);
- :mod:`.backends`: the attribute oracle, a local Hugging Face vision-language model, an OpenAI-compatible server;
- :mod:`.run`: :func:`describe_dataset`, resumable, writing the bank (``medgen-monai describe``);
- :mod:`.bank`: :class:`DescriptionBank` (reading, seeded retrieval, statistics), :func:`attach_descriptions`,
  :func:`exclude_combinations`.
"""

from __future__ import annotations

from .backends import (
    BACKENDS,
    Describer,
    OpenAIDescriber,
    OracleDescriber,
    RequestFailed,
    TransformersDescriber,
    get_describer,
)
from .bank import DescriptionBank, attach_descriptions, exclude_combinations, training_records
from .prompts import PROMPT_VERSION, build_messages, instructions
from .run import BANK_FILE, REJECTED_FILE, describe_dataset, load_datalist, read_bank_lines
from .tasks import CXR_PRIORITY, TASKS, DescribeTask, category_slug, cxr_category, cxr_check_category, get_task
from .validation import ValidationResult, extract_json, validate

__all__ = [
    "TASKS",
    "DescribeTask",
    "get_task",
    "cxr_category",
    "cxr_check_category",
    "CXR_PRIORITY",
    "category_slug",
    "PROMPT_VERSION",
    "build_messages",
    "instructions",
    "ValidationResult",
    "validate",
    "extract_json",
    "BACKENDS",
    "Describer",
    "OracleDescriber",
    "TransformersDescriber",
    "OpenAIDescriber",
    "RequestFailed",
    "get_describer",
    "BANK_FILE",
    "REJECTED_FILE",
    "describe_dataset",
    "load_datalist",
    "read_bank_lines",
    "DescriptionBank",
    "attach_descriptions",
    "exclude_combinations",
    "training_records",
]
