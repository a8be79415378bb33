"""Chain-of-thought prompts of the describe step, as chat messages.

The prompt walks the model through three steps (VAP-Diffusion, arXiv 2506.23641, step 1: describe):

1. say what the image is: the imaging modality and the view;
2. inspect every attribute of the task's fixed vocabulary one by one (its allowed values and what it
   means in the image) and pick exactly one value for each, in JSON;
3. write a 1-3 sentence description from the checked attributes only;

and asks for ONE final JSON object::

    {"modality": str, "view": str, "attributes": {name: value, ...}, "description": str}

which :func:`medgen_monai.describe.validation.validate` checks. The image's known class is left out of
the prompt by default, so the check against the class is a real test of hallucination
(``reveal_class=True`` puts it in, e.g. for a weak model).

Messages follow the OpenAI / Hugging Face chat-template format: ``[{"role": "system" | "user",
"content": [{"type": "image"}, {"type": "text", "text": ...}]}]``; the backends replace the image
placeholder with what they send (a pixel input, or a base64 ``image_url``).
"""

from __future__ import annotations

import json
from typing import Any

from .tasks import DescribeTask, get_task

__all__ = ["PROMPT_VERSION", "SYSTEM_PROMPT", "instructions", "answer_template", "build_messages", "merge_system"]

#: recorded in bank.json: change it when the wording changes, so banks say which prompt made them
PROMPT_VERSION = "cot-v1"

SYSTEM_PROMPT = (
    "You are a careful medical image annotator. You report only what is visible in the image, you never "
    "guess a diagnosis, and you finish every answer with exactly one JSON object."
)


def answer_template(task: DescribeTask | str) -> str:
    """The final JSON object's shape, with placeholders (never valid values, so a copied template is rejected)."""
    task = get_task(task)
    attributes = {a.name: "<one of: " + " | ".join(a.values) + ">" for a in task.attributes}
    shape = {
        "modality": "<imaging modality>",
        "view": "<view shown>",
        "attributes": attributes,
        "description": "<1-3 sentences>",
    }
    return json.dumps(shape, indent=1)


def instructions(task: DescribeTask | str, category: str | None = None, reveal_class: bool = False) -> str:
    """The user text of the prompt.

    Args:
        task: the describe task (or its name).
        category: the image's category; used only when ``reveal_class``.
        reveal_class: tell the model the image's class (off by default: the class is the hallucination check).
    """
    task = get_task(task)
    if reveal_class and category is None:
        raise ValueError("reveal_class=True needs the image's category")
    lines = ["Look at the image and work through three steps.", ""]
    if reveal_class:
        lines += [f"The image is labelled: {task.class_text(str(category))}.", ""]
    lines += [
        "Step 1 - modality and view. Say what kind of image this is (the imaging modality) and which view it shows.",
        "",
        "Step 2 - attributes. Inspect the attributes below one at a time. For each, look at the image, then "
        'choose exactly one of its allowed values, written exactly as listed. Use "none" only where it is '
        "listed and the thing is not in the image. Give your choices as a JSON object.",
    ]
    for i, attribute in enumerate(task.attributes, 1):
        values = ", ".join(f'"{v}"' for v in attribute.values)
        lines.append(f"  {i}. {attribute.name} - one of [{values}]: {attribute.doc.rstrip('.')}.")
    lines += [
        "",
        "Step 3 - description. Write a description of 1 to 3 sentences that uses only the attribute values "
        "you chose in step 2. Do not mention findings, colours, sizes or positions you did not choose.",
        "",
        "Final answer: after your reasoning, write ONE JSON object and nothing after it, of this form:",
        answer_template(task),
    ]
    return "\n".join(lines)


def build_messages(
    task: DescribeTask | str, category: str | None = None, reveal_class: bool = False, system: bool = True
) -> list[dict[str, Any]]:
    """The chat messages of one image: a system message and a user message with the image placeholder first.

    Args:
        task: the describe task (or its name).
        category: the image's category (only used with ``reveal_class``).
        reveal_class: put the known class in the prompt.
        system: keep the system message separate; False merges it into the user text (for chat templates
            that reject a system role).

    Returns:
        ``[{"role": "system", "content": [{"type": "text", "text": ...}]}, {"role": "user", "content":
        [{"type": "image"}, {"type": "text", "text": ...}]}]``.
    """
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": instructions(task, category, reveal_class)}],
        },
    ]
    return messages if system else merge_system(messages)


def merge_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same conversation without a system message: its text goes before the first user text."""
    system_text = "\n".join(
        c["text"] for m in messages if m["role"] == "system" for c in m["content"] if c["type"] == "text"
    )
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "system":
            continue
        message = {"role": message["role"], "content": [dict(c) for c in message["content"]]}
        if system_text and message["role"] == "user":
            for part in message["content"]:
                if part["type"] == "text":
                    part["text"] = f"{system_text}\n\n{part['text']}"
                    system_text = ""
                    break
        merged.append(message)
    return merged
