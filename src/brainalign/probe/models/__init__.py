"""Load any vision model for probing, safely, behind one wrapper: :class:`ProbeModel`.

Accepted specs (see :func:`load_probe_model` and :func:`accepted_specs`):

- a brainalign teacher-export folder (``meta.json`` + ``model.safetensors``);
- a brainalign Lightning checkpoint ``*.ckpt`` (teacher or student backbone);
- ``timm:<name>`` or ``torchvision:<name>`` with a local weights file (nothing is downloaded);
- a Hugging Face model folder on disk (``config.json`` + weights; needs ``transformers``);
- any ``nn.Module`` given in Python (hooks on named submodules).

Every :class:`ProbeModel` says how to preprocess images (the model authors' own pipeline,
:mod:`~brainalign.probe.models.pipelines`), which token is which (:class:`TokenLayout`) and who
it is (:attr:`ProbeModel.identity`, a hash of the architecture and the weights' bytes used in
feature cache keys), and returns per-layer tokens ``(B, T, D)`` from :meth:`ProbeModel.extract`.

The package: ``preprocess`` (tensor and authors' pipelines), ``pipelines`` (timm, Hugging Face,
torchvision settings), ``wrappers`` (:class:`ProbeModel` and its subclasses), ``sources`` (the
registry and :func:`load_probe_model`) and one ``source_*`` module per kind of spec.

Example::

    model = load_probe_model("runs/demo/exports/step_0000100")
    tokens = model.extract(model.preprocess(images_uint8), layers=[0, 3])
"""

from brainalign.models.checkpoint import load_lightning_backbone
from brainalign.models.weights import read_weights_file
from brainalign.probe.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocessing,
    PipelinePreprocess,
    Preprocess,
)
from brainalign.probe.models.sources import (
    LoadRequest,
    ModelSourceEntry,
    accepted_specs,
    check_model_spec,
    load_probe_model,
    register_model_source,
)
from brainalign.probe.models.wrappers import (
    DinoProbeModel,
    HookProbeModel,
    HuggingFaceProbeModel,
    ProbeModel,
    TimmProbeModel,
    TokenLayout,
    output_to_tokens,
)

# Sources register in this order; the first whose ``matches`` accepts a spec loads it.
from brainalign.probe.models import source_brainalign  # noqa: F401  (isort: skip)
from brainalign.probe.models import source_timm  # noqa: F401  (isort: skip)
from brainalign.probe.models import source_torchvision  # noqa: F401  (isort: skip)
from brainalign.probe.models import source_huggingface  # noqa: F401  (isort: skip)
from brainalign.probe.models import source_module  # noqa: F401  (isort: skip)
from brainalign.probe.models.source_huggingface import load_huggingface_module

ACCEPTED_SPECS = accepted_specs()

__all__ = [
    "ACCEPTED_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DinoProbeModel",
    "HookProbeModel",
    "HuggingFaceProbeModel",
    "ImagePreprocessing",
    "LoadRequest",
    "ModelSourceEntry",
    "PipelinePreprocess",
    "Preprocess",
    "ProbeModel",
    "TimmProbeModel",
    "TokenLayout",
    "accepted_specs",
    "check_model_spec",
    "load_huggingface_module",
    "load_lightning_backbone",
    "load_probe_model",
    "output_to_tokens",
    "read_weights_file",
    "register_model_source",
]
