"""State transitions of a MuJoCo cart-pole whose physics is drawn per prompt (the proposal's
stretch class "MuJoCo state transitions"; SPEC section 1).

A function is one cart-pole (:data:`CARTPOLE_XML`: a cart on a rail, driven by a motor, with a free
pole hinged on it; no contacts, no joint limits) with its own physical parameters, drawn per prompt
log-uniformly from :data:`PHYSICS`: cart and pole masses, pole length (centre of mass at half of
it, inertia of a thin rod), slider and hinge damping, and motor gear. A point maps a state and an
action to the state ``frame_skip`` MuJoCo steps of ``timestep`` seconds later (semi-implicit
Euler), so each prompt asks the model to identify a new dynamical system from its transitions.

Normalisation (deterministic, independent of every seed):

- **inputs** are the task's usual ``x ~ N(0, I_d)`` read as *normalised* physical quantities:
  ``(cart position, pole angle, cart velocity, pole angular velocity) = x[:4] * STATE_SCALE`` (m,
  rad, m/s, rad/s; angle 0 is upright) and the motor control is ``x[4] * ACTION_SCALE``;
  coordinates from 5 on are ignored (so ``n_dims >= 5``), and curriculum-inactive coordinates
  count as 0.
- **outputs** are 4-vectors: with ``residual: true`` (the default) the state change
  ``s' - s``, otherwise the next state ``s'`` itself, each coordinate divided by its root mean
  square over a fixed calibration sample (:func:`output_scale`: 4096 systems x 4 inputs from the
  fixed stream ``generator(0, "mujoco_dynamics", "calibration")``, per ``timestep``,
  ``frame_skip`` and ``residual``; about a second, once per process). So ``E[y_j^2] = 1`` for
  every output coordinate (up to the calibration's sampling error, a few percent: the targets are
  heavy-tailed, light and long poles swing fastest), the normaliser is 1, and the error (mean over
  the 4 coordinates of the squared error) scores 1 for "always predict 0". The next state is
  ``s' = s + y * scale`` (residual) or ``y * scale``.

The simulation runs in float64 with ``mujoco.rollout`` (one MjModel per prompt of a chunk, their
physical fields overwritten in place; one rollout per chunk, single-threaded), then casts to
float32 like every task's labels.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from iclbench.registry import Range, at_least
from iclbench.seeding import generator as named_generator
from iclbench.tasks.base import TASKS, VECTOR_OUTPUT, FunctionParams, Task

#: the system: inertials written explicitly, so overwriting them per prompt is all there is
CARTPOLE_XML = """
<mujoco model="cartpole">
  <option timestep="0.01" integrator="Euler" gravity="0 0 -9.81"/>
  <worldbody>
    <body name="cart">
      <joint name="slider" type="slide" axis="1 0 0" damping="0.1"/>
      <inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>
      <geom type="box" size="0.2 0.1 0.05" contype="0" conaffinity="0"/>
      <body name="pole">
        <joint name="hinge" type="hinge" axis="0 1 0" damping="0.01"/>
        <inertial pos="0 0 0.3" mass="0.2" diaginertia="0.006 0.006 0.0001"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.6" size="0.03" contype="0" conaffinity="0"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor name="push" joint="slider" gear="5"/>
  </actuator>
</mujoco>
"""

#: physical parameters drawn per prompt, log-uniform in [low, high]; column order of ``physics``
PHYSICS: dict[str, tuple[float, float]] = {
    "cart_mass": (0.5, 2.0),  # kg
    "pole_mass": (0.1, 0.5),  # kg
    "pole_length": (0.3, 1.0),  # m (centre of mass at half of it)
    "slider_damping": (0.05, 1.0),  # N s / m
    "hinge_damping": (0.005, 0.1),  # N m s / rad
    "gear": (2.0, 10.0),  # N per unit of control
}
#: physical state per unit of normalised input: cart position, pole angle, velocities
STATE_SCALE = np.array([1.0, 1.0, 1.0, 2.0])
#: control per unit of normalised input
ACTION_SCALE = 1.0
STATE_DIMS, ACTION_DIMS = 4, 1
#: (systems, inputs per system) of the calibration sample behind :func:`output_scale`: many
#: systems, since the spread of the targets comes mostly from the physics
CALIBRATION = (4096, 4)
#: prompts simulated per rollout (one MjModel copy each, made once)
CHUNK = 64


class CartPoleSimulator:
    """Batched transitions of cart-poles with per-prompt physics (float64 NumPy in and out)."""

    def __init__(self, timestep: float, frame_skip: int) -> None:
        import mujoco

        self._mujoco = mujoco
        self.base = mujoco.MjModel.from_xml_string(CARTPOLE_XML)
        self.base.opt.timestep = timestep
        self.frame_skip = frame_skip
        self.data = mujoco.MjData(self.base)
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.n_state = mujoco.mj_stateSize(self.base, spec)
        nq, nv = self.base.nq, self.base.nv
        if (nq, nv, self.base.nu, self.n_state) != (2, 2, 1, 1 + nq + nv):
            raise RuntimeError(f"unexpected cart-pole layout: nq={nq} nv={nv} "
                               f"nu={self.base.nu} state={self.n_state}")
        self._pool: list[Any] = []  # MjModel copies, one per prompt of a chunk

    def _models(self, count: int) -> list[Any]:
        while len(self._pool) < count:
            self._pool.append(copy.copy(self.base))
        return self._pool[:count]

    @staticmethod
    def set_physics(model: Any, p: np.ndarray) -> None:
        """Write one row of ``physics`` (order of :data:`PHYSICS`) into an MjModel."""
        cart_mass, pole_mass, length, slider_damping, hinge_damping, gear = p
        model.body_mass[1] = cart_mass
        model.body_mass[2] = pole_mass
        model.body_ipos[2] = (0.0, 0.0, length / 2)
        rod = pole_mass * length**2 / 12  # thin rod about its centre
        model.body_inertia[2] = (rod, rod, 1e-4)
        model.dof_damping[:] = (slider_damping, hinge_damping)
        model.actuator_gear[0, 0] = gear

    def step(self, physics: np.ndarray, state: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
        """Next states (B, n, 4) of states (B, n, 4) under controls (B, n, 1), physics (B, 6)."""
        from mujoco import rollout

        B, n, _ = state.shape
        out = np.empty_like(state)
        for start in range(0, B, CHUNK):
            stop = min(B, start + CHUNK)
            models = self._models(stop - start)
            for model, p in zip(models, physics[start:stop]):
                self.set_physics(model, p)
            c = stop - start
            init = np.zeros((c * n, self.n_state))
            init[:, 1:] = state[start:stop].reshape(c * n, STATE_DIMS)  # time 0, qpos, qvel
            control = np.repeat(ctrl[start:stop].reshape(c * n, 1, ACTION_DIMS),
                                self.frame_skip, axis=1)
            states, _ = rollout.rollout([m for m in models for _ in range(n)], self.data, init,
                                        control, nstep=self.frame_skip)
            out[start:stop] = states[:, -1, 1:].reshape(c, n, STATE_DIMS)
        return out


def sample_physics(batch_size: int, generator: torch.Generator) -> Tensor:
    """(B, 6) float64 physical parameters, log-uniform in :data:`PHYSICS`' ranges."""
    u = torch.rand(batch_size, len(PHYSICS), generator=generator, dtype=torch.float64)
    low = torch.tensor([math.log(lo) for lo, _ in PHYSICS.values()], dtype=torch.float64)
    high = torch.tensor([math.log(hi) for _, hi in PHYSICS.values()], dtype=torch.float64)
    return torch.exp(low + u * (high - low))


def transitions(sim: CartPoleSimulator, physics: np.ndarray, xs: np.ndarray,
                residual: bool) -> np.ndarray:
    """Unscaled targets (B, n, 4) for normalised inputs ``xs`` (B, n, >= 5), float64."""
    state = xs[..., :STATE_DIMS] * STATE_SCALE
    ctrl = xs[..., STATE_DIMS : STATE_DIMS + ACTION_DIMS] * ACTION_SCALE
    nxt = sim.step(physics, state, ctrl)
    return nxt - state if residual else nxt


@functools.lru_cache(maxsize=None)
def output_scale(timestep: float, frame_skip: int, residual: bool) -> tuple[float, ...]:
    """Root mean square of each target coordinate over the fixed calibration sample."""
    rng = named_generator(0, "mujoco_dynamics", "calibration")
    physics = sample_physics(CALIBRATION[0], rng).numpy()
    xs = torch.randn(*CALIBRATION, STATE_DIMS + ACTION_DIMS, generator=rng, dtype=torch.float64)
    target = transitions(CartPoleSimulator(timestep, frame_skip), physics, xs.numpy(), residual)
    return tuple(float(v) for v in np.sqrt(np.mean(target**2, axis=(0, 1))))


@TASKS.register("mujoco_dynamics")
class MujocoDynamics(Task):
    tags = frozenset({"dynamics", VECTOR_OUTPUT})
    options = {"timestep": 0.01, "frame_skip": 5, "residual": True}
    ranges = {"timestep": Range(0, 0.05, open_low=True, unit=" seconds"),
              "frame_skip": at_least(1)}

    def __init__(self, n_dims: int, **options: object) -> None:
        super().__init__(n_dims, **options)
        need = STATE_DIMS + ACTION_DIMS
        if n_dims < need:
            raise ValueError(f"mujoco_dynamics needs n_dims >= {need} (cart-pole state "
                             f"{STATE_DIMS} + action {ACTION_DIMS}), got n_dims={n_dims}")
        self.timestep, self.frame_skip = float(self.opts["timestep"]), self.opts["frame_skip"]
        self.residual: bool = self.opts["residual"]
        self.scale = np.array(output_scale(self.timestep, self.frame_skip, self.residual))
        self._sim: CartPoleSimulator | None = None

    @property
    def simulator(self) -> CartPoleSimulator:
        if self._sim is None:
            self._sim = CartPoleSimulator(self.timestep, self.frame_skip)
        return self._sim

    @property
    def out_dims(self) -> int:
        return STATE_DIMS

    def sample_functions(
        self, batch_size: int, active_dims: int, generator: torch.Generator
    ) -> FunctionParams:
        active = torch.zeros(batch_size, self.n_dims)
        active[:, :active_dims] = 1.0
        return {"physics": sample_physics(batch_size, generator), "active": active}

    def evaluate(self, params: FunctionParams, xs: Tensor) -> Tensor:
        x = (xs * params["active"][:, None, :].to(xs.dtype)).double().cpu().numpy()
        target = transitions(self.simulator, params["physics"].double().cpu().numpy(), x,
                             self.residual)
        return torch.from_numpy(target / self.scale).to(xs.dtype)

    @property
    def normaliser(self) -> float:
        return 1.0
