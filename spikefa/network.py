"""The network: weights, feedback wiring and state, and one call that advances it.

A :class:`Network` owns every array the kernels touch, allocated once; :meth:`Network.run`
validates a block's inputs and hands the arrays to the chosen back end (the Numba kernel
or its NumPy twin), which updates them in place. Layer names follow the paper's figure:
``in``, ``h1`` ... ``h{m-1}``, ``out``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numba
import numpy as np

from . import kernels, reference
from .config import Config, layer_names  # noqa: F401 - layer_names is also spikefa.network's
from .feedback import FeedbackWiring, build_feedback

BACKENDS = {"numba-parallel": kernels.run_block, "numba-serial": kernels.run_block_serial, "numpy": reference.run_block}

# below this many forward + feedback synapses a step is too short for threads to pay
PARALLEL_MIN_SYNAPSES = 1_000_000

# the forward sweep sums its active rows in at most this many shares (of >= 32 rows), one
# per accumulator; threads take shares, so up to this many threads share the sweep
FORWARD_SHARES = 8

# purposes of the seeded generators: each stream is independent of how the others are used
SEED_INIT_W, SEED_NOISE, SEED_ORDER, SEED_TEST, SEED_FEEDBACK, SEED_RECORD = range(6)


def rng_for(seed: int, purpose: int, *more: int) -> np.random.Generator:
    """The run's generator for one purpose (weights, noise, image order, test noise ...)."""
    return np.random.default_rng([int(seed), purpose, *map(int, more)])


@dataclass
class NetworkState:
    """Everything that changes during a run, flat over layers (see :mod:`spikefa.kernels`)."""

    spikes: np.ndarray  # uint8 (N,)
    psp: np.ndarray  # dtype (N,) forward PSP V
    prob: np.ndarray  # float64 (N,) sigma(V)
    feedback_psp: np.ndarray  # dtype (N,) feedback PSP U
    phi_fb: np.ndarray  # float64 (N,) phi_d(U)
    fb_drive: np.ndarray  # float64 (N,) input to the feedback PSP
    modulator: np.ndarray  # dtype (N,) m = phi_d(U) sigma'(V)
    psp_baseline: np.ndarray  # float64 (N,) running mean of V (node perturbation)
    pend_spikes: np.ndarray  # uint8 (K, N) spikes of the steps whose updates are pending
    pend_g: np.ndarray  # dtype (m, K, max n) their update vectors (raw, per layer)
    n_pend: np.ndarray  # int64 (1,) how many are pending
    fwd_cache: np.ndarray  # float64 (N,) run.forward_pass = "incremental": W_base s(t-1) per unit
    fwd_age: np.ndarray  # int64 (1,) steps since fwd_cache was summed in full (>= K: not valid)

    @classmethod
    def zeros(cls, sizes, dtype, deferred_steps: int = 1) -> "NetworkState":
        n, m, mx = int(sum(sizes)), len(sizes) - 1, int(max(sizes))
        return cls(
            spikes=np.zeros(n, np.uint8), psp=np.zeros(n, dtype), prob=np.zeros(n),
            feedback_psp=np.zeros(n, dtype), phi_fb=np.zeros(n), fb_drive=np.zeros(n),
            modulator=np.zeros(n, dtype), psp_baseline=np.zeros(n),
            pend_spikes=np.zeros((deferred_steps, n), np.uint8), pend_g=np.zeros((m, deferred_steps, mx), dtype),
            n_pend=np.zeros(1, np.int64),
            fwd_cache=np.zeros(n), fwd_age=np.full(1, deferred_steps, np.int64),
        )

    def arrays(self) -> dict:
        return dict(self.__dict__)

    def copy(self) -> "NetworkState":
        return NetworkState(**{k: v.copy() for k, v in self.__dict__.items()})


@dataclass
class Network:
    """Weights (raw, with a float64 decay scale per layer), feedback wiring and state."""

    config: Config
    W: list  # raw forward weights, W[l-1] of shape (n_{l-1}, n_l)
    b: list  # raw biases
    scale: np.ndarray  # float64 (m,)
    wiring: FeedbackWiring
    state: NetworkState
    _work: dict = field(default_factory=dict, repr=False)

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray(self.config.model.layers, dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def m(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_units(self) -> int:
        return int(self.sizes.sum())

    @property
    def n_synapses(self) -> int:
        """Forward plus feedback synapses (what one step has to read)."""
        return int(sum(w.size for w in self.W) + sum(f.size for f in self.wiring.F))

    @property
    def names(self) -> list[str]:
        return layer_names(self.m)

    def layer_slice(self, l: int) -> slice:
        o = int(self.offsets[l])
        return slice(o, o + int(self.sizes[l]))

    # ----------------------------------------------------------------- effective values
    def raw_weights(self, l: int) -> np.ndarray:
        """Raw weights into layer ``l`` with pending (deferred) updates applied, as the next
        flush will apply them; the stored array itself when none are pending."""
        st = self.state
        W = self.W[l - 1]
        if st.n_pend[0] == 0 or not self.wiring.learn[l - 1]:
            return W
        W = W.copy()
        self._subtract_pending(l, W, st.pend_spikes[: st.n_pend[0]], st.pend_g[:, : st.n_pend[0]])
        return W

    def _subtract_pending(self, l, W, pend_spikes, pend_g) -> None:
        pre = self.layer_slice(l - 1)
        for q in range(pend_spikes.shape[0]):
            W[np.flatnonzero(pend_spikes[q, pre])] -= pend_g[l - 1, q, : W.shape[1]]

    def apply_pending(self, pend_spikes, pend_g) -> None:
        """Write deferred updates (spikes ``(n, N)``, update vectors ``(m, n, max n_l)``, oldest
        first) into the raw weights, as the kernel's flush does; for a checkpoint of another
        ``run.deferred_steps``. The state's own pending updates are left alone."""
        for l in range(1, self.m + 1):
            if self.wiring.learn[l - 1]:
                self._subtract_pending(l, self.W[l - 1], pend_spikes, pend_g)
        self.invalidate_forward_cache()

    def weights(self, l: int) -> np.ndarray:
        """Effective forward weights into layer ``l`` (1-based), shape ``(n_{l-1}, n_l)``."""
        W = self.raw_weights(l)
        return (self.scale[l - 1] * W).astype(W.dtype)

    def biases(self, l: int) -> np.ndarray:
        return (self.scale[l - 1] * self.b[l - 1]).astype(self.b[l - 1].dtype)

    def feedback_matrix(self, l: int) -> np.ndarray | None:
        """Effective matrix into feedback layer ``l`` (1-based hidden), ``(n_l, n_src)``; None if off."""
        if not self.wiring.on[l - 1]:
            return None
        si = self.wiring.scale_idx[l - 1]
        F = self.wiring.F[l - 1]
        dtype = self.W[0].dtype
        if F.dtype != dtype:  # stored as int8 levels
            return (self.wiring.quantum[l - 1] * F).astype(dtype)
        return F.copy() if si < 0 else (self.scale[si] * F).astype(dtype)

    def invalidate_forward_cache(self) -> None:
        """Make the next step sum its forward drive in full (``run.forward_pass =
        "incremental"`` keeps the last step's sums); call after writing ``W`` from outside."""
        self.state.fwd_age[0] = self.state.pend_spikes.shape[0]

    def fold_scale(self) -> None:
        """Multiply the decay scale into the raw weights (exact enough, and rare: only when
        the scale has fallen below 1/2, so that raw weights keep their float32 range)."""
        for l in range(self.m):
            c = self.W[l].dtype.type(self.scale[l])
            self.W[l] *= c
            self.b[l] *= c
            self.state.pend_g[l] *= c
            self.scale[l] = 1.0
        self.invalidate_forward_cache()

    def copy(self) -> "Network":
        """A deep copy (transport feedback keeps aliasing the copy's own W)."""
        return copy.deepcopy(self)

    # ----------------------------------------------------------------------- advancing
    def _workspaces(self, n_steps: int, n_rec: int) -> dict:
        key = (n_steps, n_rec)
        if self._work.get("key") != key:
            dtype = self.W[0].dtype
            n, mx = self.n_units, int(self.sizes.max())
            self._work = dict(
                key=key,
                active=np.zeros(n, np.int64), n_active=np.zeros(self.m, np.int64),
                acc=np.zeros((FORWARD_SHARES, mx)), g=np.zeros(mx, dtype), cnt=np.zeros(self.state.pend_spikes.shape[0]),
                spike_buf=np.zeros((n_steps, n), np.uint8),
                trace_psp=np.zeros((n_steps, n_rec), dtype),
                trace_fb=np.zeros((n_steps, n_rec), dtype),
                trace_mod=np.zeros((n_steps, n_rec), dtype),
                prev_spikes=np.zeros(n, np.uint8), changed=np.zeros(n, np.int64),
            )
        return self._work

    def _check_block(self, uniforms, in_prob, step_image, step_label, rec_idx, plastic, feedback):
        """:meth:`run`'s inputs, checked and converted in one place. The kernels index without
        bounds checks: a short ``step_label`` or an index out of range read past an array
        (garbage, or a crash), a label outside ``0..n_classes-1`` trained towards no class, and
        raw pixels or NaN as probabilities made every or no input unit spike, all silently."""
        def array(name, a, what):
            try:
                return np.asarray(a)
            except Exception as exc:  # ragged lists
                raise ValueError(f"{name} must be {what}; got {type(a).__name__} ({exc})") from None

        def integers(name, a, length):
            a = array(name, a, f"an integer array of shape ({length},)")
            if a.shape != (length,) or not (np.issubdtype(a.dtype, np.integer) or (a.size == 0 and a.dtype == float)):
                raise ValueError(f"{name} must be an integer array of shape ({length},), one entry per step "
                                 f"(len(uniforms) = {length}); got {a.dtype} {a.shape}")
            return np.ascontiguousarray(a, dtype=np.int64)

        uniforms = array("uniforms", uniforms, f"float64 of shape (T, {self.n_units})")
        if uniforms.ndim != 2 or uniforms.shape[1] != self.n_units or uniforms.dtype != np.float64:
            raise ValueError(f"uniforms must be float64 of shape (T, {self.n_units}), got {uniforms.dtype} {uniforms.shape}")
        T = uniforms.shape[0]
        # NaN made no unit spike; the kernels take uniform draws in [0, 1)
        if uniforms.size and not (uniforms.min() >= 0 and uniforms.max() <= 1):
            bad = uniforms[~((uniforms >= 0) & (uniforms <= 1))].flat[0]
            raise ValueError(f"uniforms must be uniform draws in [0, 1) (rng.random((T, {self.n_units}))); got {float(bad)!r}")
        in_prob = array("in_prob", in_prob, f"a float array of shape (n_img, {self.sizes[0]})")
        if in_prob.ndim != 2 or in_prob.shape[1] != self.sizes[0]:
            raise ValueError(f"input images must have {self.sizes[0]} pixels, got shape {in_prob.shape}")
        if not np.issubdtype(in_prob.dtype, np.number) or np.issubdtype(in_prob.dtype, np.complexfloating):
            raise ValueError(f"in_prob must be real spike probabilities, got dtype {in_prob.dtype}")
        in_prob = np.ascontiguousarray(in_prob, dtype=np.float64)
        if in_prob.size and not (in_prob.min() >= 0 and in_prob.max() <= 1):
            bad = in_prob[~((in_prob >= 0) & (in_prob <= 1))].flat[0]
            raise ValueError(f"in_prob holds the input units' spike probabilities, in [0, 1]: pass "
                             f"input_probabilities(images, p_max), not the images; got {float(bad)!r}")
        step_image = integers("step_image", step_image, T)
        step_label = integers("step_label", step_label, T)
        if T and (step_image.min() < 0 or step_image.max() >= in_prob.shape[0]):
            raise ValueError(f"step_image indexes {in_prob.shape[0]} images; got {step_image.min()}..{step_image.max()}")
        n_classes = self.config.model.n_classes
        if T and (step_label.min() < 0 or step_label.max() >= n_classes):
            raise ValueError(f"step_label must lie in 0..{n_classes - 1} (model.n_classes = {n_classes}); "
                             f"got {step_label.min()}..{step_label.max()}")
        if rec_idx is None:
            rec_idx = np.zeros(0, np.int64)
        else:
            rec_idx = array("rec_idx", rec_idx, "a 1-D array of flat neuron indices")
            if rec_idx.ndim != 1 or not (np.issubdtype(rec_idx.dtype, np.integer) or rec_idx.size == 0):
                raise ValueError(f"rec_idx must be a 1-D integer array of flat neuron indices; got {rec_idx.dtype} "
                                 f"{rec_idx.shape}")
            rec_idx = np.ascontiguousarray(rec_idx, dtype=np.int64)
        if rec_idx.size and (rec_idx.min() < 0 or rec_idx.max() >= self.n_units):
            raise ValueError(f"recorded neuron indices must lie in 0..{self.n_units - 1}; got {rec_idx.min()}..{rec_idx.max()}")
        for name, flag in (("plastic", plastic), ("feedback", feedback)):
            if not (isinstance(flag, (bool, np.bool_)) or (name == "feedback" and flag is None)):
                raise ValueError(f"{name} = {flag!r}: expected True or False" + (" (or None)" if name == "feedback" else ""))
        return uniforms, in_prob, step_image, step_label, rec_idx

    def run(self, uniforms, in_prob, step_image, step_label, *, plastic=True, feedback=None,
            rec_idx=None, backend=None) -> dict:
        """Advance ``len(uniforms)`` steps in place and return the block's buffers.

        Parameters
        ----------
        uniforms : float64 array (T, N)
            Uniform draws in [0, 1), one per unit (input included) and step.
        in_prob : float64 array (n_img, n_0)
            Input spike probabilities ``min(x, p_max)`` of the images used in the block.
        step_image, step_label : int arrays (T,)
            Row of ``in_prob`` and class shown at each step.
        plastic : bool
            Plasticity on (training) or off (testing).
        feedback : bool, optional
            Run the feedback sweep; default ``plastic`` (it never changes forward activity).
        rec_idx : int array, optional
            Flat indices of neurons whose V, U and m are traced.
        backend : {'numba', 'numba-serial', 'numba-parallel', 'numpy'}, optional
            Default: the config's ``run.backend``. ``numba`` picks the threaded kernel for
            networks of at least ``PARALLEL_MIN_SYNAPSES`` synapses, else the serial one,
            and the NumPy twin when Numba's JIT is disabled (``NUMBA_DISABLE_JIT=1``).

        Returns
        -------
        dict
            Views of ``spike_buf`` (T, N) and of the traces (T, R); they are overwritten
            by the next call.
        """
        cfg = self.config
        backend = backend or cfg.run.backend
        if backend == "numba":
            small = self.n_synapses < PARALLEL_MIN_SYNAPSES or numba.get_num_threads() == 1
            backend = "numba-serial" if small else "numba-parallel"
            if numba.config.DISABLE_JIT:  # the kernel would run as Python loops; the twin is faster
                backend = "numpy"
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} unknown; valid: {', '.join(BACKENDS)}")
        uniforms, in_prob, step_image, step_label, rec_idx = self._check_block(
            uniforms, in_prob, step_image, step_label, rec_idx, plastic, feedback)
        T = uniforms.shape[0]
        nthreads = numba.get_num_threads() if backend == "numba-parallel" else 1
        work = self._workspaces(max(T, 1), rec_idx.size)
        w = self.wiring
        dummy_mask = np.zeros((1, 1), np.uint8)
        masks = tuple(mk if mk is not None else dummy_mask for mk in w.W_mask)
        use_mask = np.array([mk is not None for mk in w.W_mask])
        mp = cfg.model
        f64 = np.float64
        st = self.state
        if feedback is None:
            feedback = plastic
        BACKENDS[backend](
            self.sizes, self.offsets,
            tuple(self.W), tuple(self.b), self.scale, masks, use_mask, w.learn,
            tuple(w.F), w.src, w.scale_idx, w.on, w.learns, w.quantum,
            st.spikes, st.psp, st.prob, st.feedback_psp, st.phi_fb, st.fb_drive, st.modulator, st.psp_baseline,
            work["active"], work["n_active"], work["acc"], work["g"],
            uniforms, in_prob, step_image, step_label,
            int(self.sizes[-1] // mp.n_classes),
            f64(1.0 - mp.tau), f64(mp.tau), f64(mp.eta), f64(mp.eta * mp.gamma), f64(mp.eta_feedback),
            f64(mp.np_baseline_rate), f64(mp.np_variance_floor), kernels.PHI_CODES[mp.phi_d],
            bool(plastic), bool(feedback),
            rec_idx, work["spike_buf"], work["trace_psp"], work["trace_fb"], work["trace_mod"],
            nthreads,
            st.pend_spikes, st.pend_g, st.n_pend, work["cnt"],
            cfg.run.forward_pass == "incremental", st.fwd_cache, st.fwd_age,
            work["prev_spikes"], work["changed"],
        )
        if self.scale.min() < 0.5:
            self.fold_scale()
        return dict(spikes=work["spike_buf"][:T], psp=work["trace_psp"][:T],
                    feedback_psp=work["trace_fb"][:T], modulator=work["trace_mod"][:T])


def init_network(cfg: Config) -> Network:
    """A fresh network: W ~ U[-w_init, w_init], b = bias_init, feedback from the variant.

    Forward weights and feedback matrices come from separate seeded streams, so that two
    variants with the same seed start from the same forward weights.
    """
    mp = cfg.model
    sizes = list(mp.layers)
    dtype = np.dtype(mp.dtype)
    rng_w = rng_for(cfg.run.seed, SEED_INIT_W)
    W = [rng_w.uniform(-mp.w_init, mp.w_init, size=(sizes[l - 1], sizes[l])).astype(dtype) for l in range(1, len(sizes))]
    b = [np.full(sizes[l], mp.bias_init, dtype=dtype) for l in range(1, len(sizes))]
    wiring = build_feedback(mp, sizes, W, rng_for(cfg.run.seed, SEED_FEEDBACK))
    return Network(config=cfg, W=W, b=b, scale=np.ones(len(sizes) - 1), wiring=wiring,
                   state=NetworkState.zeros(sizes, dtype, deferred_steps(cfg, wiring)))


def deferred_steps(cfg: Config, wiring: FeedbackWiring) -> int:
    """``run.deferred_steps``, or 1 where deferring is not exact: when feedback reads the
    forward weights (transport) or synapses are masked (sparse FA)."""
    if (wiring.scale_idx >= 0).any() or any(mk is not None for mk in wiring.W_mask):
        return 1
    return cfg.run.deferred_steps


def input_probabilities(images: np.ndarray, p_max: float) -> np.ndarray:
    """``min(x, p_max)`` with ``x`` = pixels scaled to [0, 1] (uint8 / 255, or floats as given)."""
    if images.dtype == np.uint8:
        x = images.astype(np.float64) / 255.0
    else:
        x = images.astype(np.float64)
        ok = (x >= 0) & (x <= 1)  # False for NaN too
        if not ok.all():
            raise ValueError(f"input values are probabilities, pixels scaled to [0, 1]; got {float(x[~ok][0])!r}")
    return np.minimum(x, p_max)
