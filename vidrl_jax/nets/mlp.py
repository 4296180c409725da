"""Multi-layer perceptron shared by the methods.

Hidden layers are Dense -> (LayerNorm) -> activation, the order of AIME's official ``MLP`` (``norm="ln"``,
``hidden_activation="elu"``); LAPO's action decoder is Dense(128) -> relu -> Dense(128) -> relu -> Dense
(official ``create_decoder``). The output layer's initialisers are separate so that heads can start at zero
(LAPO's stage-3 RL head, AIME's ``zero_init``).
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax

from vidrl_jax.nets.impala import Initializer, torch_default_init


class MLP(nn.Module):
  """x (..., F) -> (..., out), or (..., hidden[-1]) when ``out`` is None (no output layer, last hidden kept).

  Attributes:
    hidden: widths of the hidden layers.
    out: width of the (linear) output layer; None omits it.
    activation: hidden-layer nonlinearity (relu by default; AIME uses elu).
    layer_norm: LayerNorm after each hidden Dense, before the activation.
    kernel_init: hidden-layer weight init (PyTorch default by default, as the official code).
    out_kernel_init / out_bias_init: output-layer init; ``nn.initializers.zeros`` for a zero-initialised head.
  """

  hidden: Sequence[int]
  out: int | None = None
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  layer_norm: bool = False
  kernel_init: Initializer = torch_default_init
  out_kernel_init: Initializer | None = None
  out_bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, kernel_init=self.kernel_init, name=f"dense{i}")(x)
      if self.layer_norm:
        x = nn.LayerNorm(epsilon=1e-5, name=f"ln{i}")(x)  # PyTorch eps.
      x = self.activation(x)
    if self.out is not None:
      out_init = self.kernel_init if self.out_kernel_init is None else self.out_kernel_init
      x = nn.Dense(self.out, kernel_init=out_init, bias_init=self.out_bias_init, name="out")(x)
    return x
