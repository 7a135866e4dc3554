"""torchvision whose compiled extension does not load beside the installed torch.

PyPI's Linux torchvision wheels are CUDA builds. Beside a CPU-only torch their extension
(``torchvision/_C.so``, linked against ``libtorch_cuda``) cannot load, and ``import torchvision``
then stops at an unguarded fake-kernel registration for ``torchvision::nms`` ("operator
torchvision::nms does not exist"); so does every package that imports it (timm, Lightning,
parts of transformers). Only the detection operators live in that extension: the models,
layers and transforms are Python.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

#: Packages whose models are torchvision's Python layers (timm builds on them).
VISION_PACKAGES = ("torchvision", "timm")
#: The operators whose fakes ``torchvision/_meta_registrations.py`` registers unconditionally.
UNGUARDED_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
NOTE = (
    "torchvision's compiled extension does not load beside this torch (a build for another "
    "torch, e.g. PyPI's CUDA wheel beside a CPU torch): its detection operators (nms, roi_align, "
    "…) are unavailable; its Python models and layers are used as they are"
)

_declared: list[torch.library.Library] = []  # a Library's definitions live as long as it does


def allow_torchvision_without_extension() -> bool:
    """Make ``import torchvision`` succeed when its compiled extension cannot load.

    When torchvision is installed, not yet imported, and its extension fails to load, declare
    the schemas of :data:`UNGUARDED_SCHEMAS` (with no kernel: calling them still fails, naming
    the operator), so that the import reaches the Python models. Returns ``True`` when the
    declarations are in place; a working torchvision, or none, is left alone.
    """
    if _declared:
        return True
    if "torchvision" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = Path(next(iter(spec.submodule_search_locations)))
    extensions = sorted(folder.glob("_C.*so")) + sorted(folder.glob("_C.*pyd"))
    if not extensions:
        return False
    try:
        torch.ops.load_library(str(extensions[0]))
    except (OSError, ImportError, RuntimeError):
        pass
    else:
        return False
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in UNGUARDED_SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr(torch.ops.torchvision, name):
            library.define(schema)
    _declared.append(library)
    return True


def torchvision_note(model: torch.nn.Module) -> str | None:
    """:data:`NOTE` when torchvision was imported without its extension and ``model`` is built
    from torchvision's or timm's modules, else ``None``."""
    if not _declared or "torchvision" not in sys.modules:
        return None
    packages = {type(module).__module__.split(".", 1)[0] for module in model.modules()}
    return NOTE if packages.intersection(VISION_PACKAGES) else None
