"""Models of the experiments (DESIGN §5): architectures, norms, initialisation schemes, losses.

- :func:`build_model` turns a run config's ``model:`` section into a seeded, initialised network
  (``mlp`` | ``cnn`` | ``resnet_lite``); it is what the trainer calls.
- Architectures: :func:`mlp`, :func:`cnn1d` (MNIST-1D signals), :func:`cnn2d` (images),
  :func:`resnet_lite` (1-D or 2-D, optionally in Fixup form); ``norm`` ∈ :data:`NORMS`.
- Initialisation (:data:`INITS`): PyTorch's default, :func:`scaled_init` (*ours*: [G]'s large-init
  knob), :func:`fixup_init`, :func:`metainit`, :func:`gradinit`, dispatched by :func:`apply_init`;
  :func:`gradient_quotient` is MetaInit's objective, also a curvature diagnostic.
- Losses: :func:`mse` (½‖f − onehot(y)‖², mean over samples) and :func:`ce`, by name via
  :func:`get_loss`.
"""

from landscope.models.build import MODELS, build_model
from landscope.models.cnn import cnn1d, cnn2d
from landscope.models.init import (
    INITS,
    InitTrace,
    apply_init,
    fixup_init,
    gradient_quotient,
    gradinit,
    metainit,
    scaled_init,
)
from landscope.models.losses import LOSSES, ce, get_loss, mse
from landscope.models.mlp import ACTIVATIONS, mlp
from landscope.models.norms import NORMS
from landscope.models.resnet import ResNetLite, resnet_lite

__all__ = [
    "mlp",
    "cnn1d",
    "cnn2d",
    "resnet_lite",
    "ResNetLite",
    "build_model",
    "MODELS",
    "NORMS",
    "ACTIVATIONS",
    "INITS",
    "InitTrace",
    "apply_init",
    "scaled_init",
    "fixup_init",
    "metainit",
    "gradinit",
    "gradient_quotient",
    "get_loss",
    "mse",
    "ce",
    "LOSSES",
]
