"""Export a spikefa network to Brian2, step for step.

:func:`to_brian2` builds a :class:`brian2.Network` that *is* the spikefa model of docs/model.md
with the network's current weights, biases, feedback weights and state: one
``NeuronGroup`` per forward population (``in``, ``h1`` ... ``out``) and per feedback
population (``h1_fb`` ... ``out_fb``, the last being the error neurons), ``Synapses``
for every projection (``W_h1`` ... ``W_out`` forward, ``B_h1`` ... feedback), and the
plasticity written as Brian2 code. :func:`write_script` writes the same model as a
standalone, readable Python script with its arrays in an ``.npz`` beside it.

How the step order of docs/model.md is reproduced
-------------------------------------------
Brian2 runs the objects of a network slot by slot (``when``) and, inside a slot, by
``order``. The exported network adds one slot per phase of docs/model.md to Brian2's default
schedule::

    start, input, forward, error, feedback, plasticity, groups, thresholds, synapses, resets, end

========== ===================================================================== ==========
slot       objects (in ``order``)                                                 SPEC phase
========== ===================================================================== ==========
input      ``in_input``: ``spike = int(u < clip(x, 0, p_max))``                   1
forward    for l = 1..m: summed variable ``drive = sum_i w_ij spike_i`` of        2
           ``W_<l>`` (order 2l-1), then ``<l>_forward`` (order 2l): ``psp``,
           ``prob = sigma(psp)``, ``spike = int(u < prob)``
error      ``out_fb_error``: ``U = (1-tau) U + tau (spike - target)``             3
feedback   for l = m-1..1: summed ``feedback_drive`` of ``B_<l>`` (order          4
           2(m-l)-1), then ``<l>_fb_feedback`` (order 2(m-l))
plasticity ``<l>_plasticity`` (modulator, bias; order 0), ``W_<l>_plasticity``    5
           (order 1); node perturbation (``learned``): ``<l>_reward_terms`` (2),
           ``<l>_reward_update`` (3), ``<l>_fb_estimate`` (4), ``B_<l>_plasticity``
           (5), running means ``<src>_baseline`` (6)
thresholds ``spike > 0.5`` of every forward group: spike *events* for
           ``SpikeMonitor`` (no reset; they change nothing)
end        ``StateMonitor`` traces (``record_traces``): the values after the step
========== ===================================================================== ==========

Why summed variables and not ``on_pre``: a spike of layer ``l-1`` must drive layer ``l``
in the same step, and layer ``l``'s new spikes layer ``l+1`` still in that step. Brian2's
``on_pre`` pathways deliver in the ``synapses`` slot after all thresholds, so a sweep of
m layers would take m steps. A summed variable ``drive_post = w*spike_pre`` is an
ordinary, schedulable code object: placing each layer's sum right before that layer's
update reproduces the bottom-up sweep exactly. The price is a dense pass over every
synapse per step (with ~50% of hidden units spiking, about twice the event-driven work).
No ``network_operation`` (Python callback) is used: every phase is generated code, so the
exported model also runs on the Cython target and in C++ standalone mode.

Differences from spikefa's arithmetic (none changes the model):

- Brian2 computes in float64. Weight decay is applied as written in docs/model.md,
  ``W <- W - eta (m s^T + gamma W)`` on every synapse every step; spikefa reaches the same
  values through a float64 decay scale (``W_eff = scale * W_raw``), so the two agree to a
  few ulp per step, not bit for bit.
- Sums over synapses are ``numpy.bincount`` (numpy target) or C loops, in synapse order;
  spikefa sums in float64 in its own order, and may write its weight updates a few
  steps late (``run.deferred_steps``, folded into the sums exactly): again a few ulp.
- The ``transport`` control reuses the forward synapses ``W_<l+1>``: a second summed
  variable, ``transport_drive_pre = w*phi_fb_post``, carries ``(W^{l+1})^T phi_d(U^{l+1})``
  down, so there is nothing to keep in sync.

Randomness: given ``uniforms`` (float64, one row per step and one column per unit, the
layout of :meth:`spikefa.network.Network.run`), each population reads its columns through
a 2-D ``TimedArray`` ``noise_<name>(t, i)`` and takes exactly spikefa's decisions
(``spike = u < p``). The network then refuses (:class:`SpikefaNetwork.run`) to run past the
last row, where a ``TimedArray`` would silently repeat it. Without ``uniforms`` the code
uses Brian2's ``rand()`` (seed it with ``brian2.seed``).

One Brian2 time step (``dt = 1 ms``, a bookkeeping unit only: ``tau`` is the per-step mix
of docs/model.md) is one spikefa step; the image shown at step ``t`` is row ``t // k`` of the
``pixels`` ``TimedArray`` (``dt = k`` steps, ``k`` steps per image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    import brian2 as b2
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("spikefa.export needs Brian2: pip install 'spikefa[brian2]'") from exc

from . import __version__
from .config import Config, ConfigError, load_config
from .data import load_dataset
from .network import SEED_NOISE, SEED_ORDER, Network, init_network, input_probabilities, rng_for

# ==== BEGIN BRIAN2 MODEL ==========================================================
# Everything between this line and END BRIAN2 MODEL uses only numpy and brian2:
# spikefa.export runs it, and copies it verbatim into the scripts it exports.

# One slot per phase of docs/model.md, inserted after Brian2's 'start' slot.
SCHEDULE = ["start", "input", "forward", "error", "feedback", "plasticity",
            "groups", "thresholds", "synapses", "resets", "end"]

# phi_d, the sigmoid centred on 0 applied to feedback PSPs, as Brian2 expressions
PHI_D = {"tanh": "tanh({u})", "2sigma-1": "2/(1 + exp(-{u})) - 1", "sigma-0.5": "1/(1 + exp(-{u})) - 0.5"}

# code generation targets that can be chosen per object; C++ standalone is a device
# (brian2.set_device('cpp_standalone')) and is used with target=None
TARGETS = {"numpy": "NumpyCodeObject", "cython": "CythonCodeObject"}

STEP = 1 * b2.ms  # one model step; a bookkeeping unit only

FORWARD_EQS = """
psp : 1              # V, the forward PSP
prob : 1             # sigma(V), this step's spike probability
spike : 1            # 1 if the neuron spiked at this step, else 0
drive : 1            # sum_i W_ij spike_i over the layer below (summed by the W synapses)
bias : 1             # b
modulator : 1        # m = phi_d(U) sigma'(V), the plasticity factor of the step
phi_fb : 1 (linked)  # phi_d(U) of this neuron's feedback neuron
"""

FEEDBACK_EQS = """
feedback_psp : 1     # U, the feedback PSP
phi : 1              # phi_d(U)
spike : 1 (linked)   # spike of the forward neuron of the same unit
prob : 1 (linked)    # sigma(V) of the forward neuron of the same unit
"""


class SpikefaNetwork(b2.Network):
    """A :class:`brian2.Network` that refuses to run past the stimulus and noise it holds.

    A ``TimedArray`` read after its last row returns the last row again; a run longer
    than the uniforms it was given would then silently repeat random decisions. Every
    run is checked against ``n_steps_max`` first.

    Attributes
    ----------
    step_dt : Quantity
        Duration of one model step.
    n_steps_max : int
        Steps of stimulus (and of shared noise, if given) the network holds.
    layer_names, sizes : list
        Populations ``in, h1, ..., out`` and their sizes.
    """

    def __init__(self, *objs, step_dt, n_steps_max, layer_names, sizes, name="spikefa"):
        super().__init__(*objs, name=name)
        self.step_dt = step_dt
        self.n_steps_max = int(n_steps_max)
        self.layer_names = list(layer_names)
        self.sizes = [int(n) for n in sizes]
        self.schedule = SCHEDULE

    @property
    def steps_done(self) -> int:
        return int(round(float(self.t / self.step_dt)))

    def run(self, duration, report=None, report_period=10 * b2.second, namespace=None, profile=None, level=0):
        """As :meth:`brian2.Network.run`; raises ``ValueError`` past ``n_steps_max``.

        Every object has an explicit namespace; ``namespace`` defaults to ``{}`` so that
        nothing is picked up from the caller's scope.
        """
        n = int(round(float(duration / self.step_dt)))
        if self.steps_done + n > self.n_steps_max:
            raise ValueError(
                f"cannot run {n} steps from step {self.steps_done}: the network holds stimulus and noise "
                f"for {self.n_steps_max} steps only (a TimedArray would repeat its last row)")
        super().run(duration, report=report, report_period=report_period,
                    namespace={} if namespace is None else namespace, profile=profile, level=level + 1)

    def run_steps(self, n: int, **kwargs) -> None:
        """Advance ``n`` model steps."""
        self.run(int(n) * self.step_dt, **kwargs)


def build_network(arrays, *, target="numpy", record_spikes=True, record_traces=False, name="spikefa"):
    """Build the Brian2 network of a model from its arrays.

    Parameters
    ----------
    arrays : mapping
        What :func:`spikefa.export.model_arrays` returns (or the ``.npz`` it is saved in):
        sizes, constants, weights ``W_<l>`` (pre, post), ``b_<l>``, ``B_<l>`` (post, pre),
        state ``V_<l>``, ``U_<l>``, ``phi_<l>``, ``Vbar_<l>``, stimulus ``pixels``/``labels`` and
        optionally shared noise ``noise_<l>``.
    target : {'numpy', 'cython'} or None
        Code generation target of every object; None leaves it to Brian2's preferences
        and device (use None with ``brian2.set_device('cpp_standalone')``).
    record_spikes : bool
        A ``SpikeMonitor`` ``spikes_<l>`` per forward population.
    record_traces : bool
        ``StateMonitor`` ``trace_<l>`` (psp) and ``trace_<l>_fb`` (feedback_psp) of every
        neuron, sampled after each step.

    Returns
    -------
    SpikefaNetwork
    """
    a = arrays
    names = [str(n) for n in a["names"]]
    sizes = [int(n) for n in a["layers"]]
    m = len(sizes) - 1
    k = int(a["steps_per_image"])
    plastic, feedback = bool(a["plastic"]), bool(a["feedback_on"])
    learn, fb_on, fb_src = a["learn"], a["fb_on"], a["fb_src"]
    transport, fb_learns = a["fb_transport"], a["fb_learns"]
    # node perturbation: hidden layers whose B learns, and the layers their reward reads
    learners = [l for l in range(1, m) if fb_learns[l - 1] and fb_on[l - 1]] if plastic else []
    reward_sources = sorted({int(fb_src[l - 1]) for l in learners})
    if target is not None and target not in TARGETS:
        raise ValueError(f"target {target!r} unknown; valid: {', '.join(TARGETS)} or None")
    codeobj = None if target is None else getattr(b2, TARGETS[target])
    phi = PHI_D[str(a["phi_d"])].format(u="feedback_psp")
    clock = b2.Clock(dt=STEP, name=f"{name}_clock")
    shared_noise = "noise_" + names[0] in a
    n_steps_max = a["pixels"].shape[0] * k
    ns = dict(tau=float(a["tau"]), one_minus_tau=1.0 - float(a["tau"]), p_max=float(a["p_max"]),
              eta=float(a["eta"]), gamma=float(a["gamma"]), eta_fb=float(a["eta_feedback"]),
              baseline_rate=float(a["np_baseline_rate"]), var_floor=float(a["np_variance_floor"]),
              pixels=b2.TimedArray(np.asarray(a["pixels"], dtype=float), dt=k * STEP, name="pixels"),
              label=b2.TimedArray(np.asarray(a["labels"], dtype=float), dt=k * STEP, name="label"))

    def uniform(l):
        """The uniform draw of unit i of layer l at this step: shared noise or rand()."""
        if not shared_noise:
            return "rand()"
        return f"noise_{names[l]}(t, i)"

    def namespace(*layers):
        out = dict(ns)
        if shared_noise:
            for l in layers:
                key = f"noise_{names[l]}"
                out[key] = b2.TimedArray(np.asarray(a[key], dtype=float), dt=STEP, name=key)
        return out

    if shared_noise:
        n_steps_max = min(n_steps_max, min(a[f"noise_{n}"].shape[0] for n in names))
        for l, n in enumerate(names):
            if a[f"noise_{n}"].shape[1] != sizes[l]:
                raise ValueError(f"noise_{n} has {a[f'noise_{n}'].shape[1]} columns, layer {n} {sizes[l]} units")
    common = dict(clock=clock, codeobj_class=codeobj)
    objects = []

    # --- populations
    fwd = [b2.NeuronGroup(sizes[0], "spike : 1", threshold="spike > 0.5", reset="", namespace=namespace(0),
                          name=names[0], **common)]
    fwd[0].run_regularly(f"spike = int({uniform(0)} < clip(pixels(t, i), 0, p_max))",
                         when="input", order=0, name=f"{names[0]}_input")
    fb = [None]
    for l in range(1, m + 1):
        eqs = FORWARD_EQS
        if l < m and transport[l - 1] and fb_on[l - 1]:
            eqs += "transport_drive : 1  # (W^{l+1})^T phi_d(U^{l+1}) (summed by the W synapses above)\n"
        if l in reward_sources:
            eqs += "psp_baseline : 1  # running mean of V (node perturbation)\n"
        g = b2.NeuronGroup(sizes[l], eqs, threshold="spike > 0.5", reset="", namespace=namespace(l),
                           name=names[l], **common)
        g.psp = a[f"V_{names[l]}"]
        g.bias = a[f"b_{names[l]}"]
        if l in reward_sources:
            g.psp_baseline = a[f"Vbar_{names[l]}"]
        g.run_regularly(
            "psp = one_minus_tau*psp + tau*(drive + bias)\n"
            "prob = 1/(1 + exp(-psp))\n"
            f"spike = int({uniform(l)} < prob)",
            when="forward", order=2 * l, name=f"{names[l]}_forward")
        fwd.append(g)

        eqs = FEEDBACK_EQS
        if l == m:
            eqs += ("target : 1               # y*: 1 if this output unit belongs to the class shown\n"
                    "label_class : 1 (constant)  # the class that owns this output unit\n")
        elif transport[l - 1] and fb_on[l - 1]:
            eqs += "feedback_drive : 1 (linked)  # (W^{l+1})^T phi_d(U^{l+1}), from the forward group\n"
        else:
            eqs += "feedback_drive : 1  # B phi_d(U^src), summed by the B synapses\n"
        if l in learners:
            eqs += ("estimate : 1  # node-perturbation estimate of the credit lambda\n"
                    "reward : 1 (linked)  # R = e . (V^src - Vbar^src) / tau, from the reward group\n")
        h = b2.NeuronGroup(sizes[l], eqs, namespace=namespace(), name=f"{names[l]}_fb", **common)
        h.feedback_psp = a[f"U_{names[l]}"]
        h.phi = a[f"phi_{names[l]}"]
        h.spike = b2.linked_var(g, "spike")
        h.prob = b2.linked_var(g, "prob")
        g.phi_fb = b2.linked_var(h, "phi")
        if l == m:
            h.label_class = np.arange(sizes[m]) // (sizes[m] // int(a["n_classes"]))
            if feedback:
                h.run_regularly(
                    "target = int(label_class == label(t))\n"
                    "feedback_psp = one_minus_tau*feedback_psp + tau*(spike - target)\n"
                    f"phi = {phi}",
                    when="error", order=0, name=f"{names[l]}_fb_error")
        fb.append(h)
    objects += fwd + fb[1:]
    for l in range(1, m):
        if transport[l - 1] and fb_on[l - 1]:
            fb[l].feedback_drive = b2.linked_var(fwd[l], "transport_drive")

    # --- forward synapses W^l: layer l-1 -> layer l
    W = [None]
    for l in range(1, m + 1):
        n = names[l]
        model = "w : 1\ndrive_post = w*spike_pre : 1 (summed)\n"
        if l >= 2 and transport[l - 2] and fb_on[l - 2]:
            model += "transport_drive_pre = w*phi_fb_post : 1 (summed)\n"
        S = b2.Synapses(fwd[l - 1], fwd[l], model=model, namespace=namespace(), name=f"W_{n}", **common)
        weights = np.asarray(a[f"W_{n}"], dtype=float)
        mask = a.get(f"mask_{n}")
        # synapses in row-major (pre, post) order, so that a synapse's index is i*n_post + j
        ii, jj = np.nonzero(np.ones(weights.shape, bool) if mask is None else np.asarray(mask, bool))
        S.connect(i=ii, j=jj)
        S.w = weights[ii, jj]
        S.summed_updaters["drive_post"].when = "forward"
        S.summed_updaters["drive_post"].order = 2 * l - 1
        if "transport_drive_pre" in S.summed_updaters:
            S.summed_updaters["transport_drive_pre"].when = "feedback"
            S.summed_updaters["transport_drive_pre"].order = 2 * (m - (l - 1)) - 1
        W.append(S)
    objects += W[1:]

    # --- feedback sweep, top-down: B^l carries phi_d(U^src) into feedback layer l
    B = [None] * m
    if feedback:
        for l in range(m - 1, 0, -1):
            if not fb_on[l - 1]:
                continue
            n = names[l]
            fb[l].run_regularly(
                "feedback_psp = one_minus_tau*feedback_psp + tau*feedback_drive\n"
                f"phi = {phi}",
                when="feedback", order=2 * (m - l), name=f"{n}_fb_feedback")
            if transport[l - 1]:
                continue
            src = int(fb_src[l - 1])
            S = b2.Synapses(fb[src], fb[l], model="B : 1\nfeedback_drive_post = B*phi_pre : 1 (summed)\n",
                            namespace=namespace(), name=f"B_{n}", **common)
            Bl = np.asarray(a[f"B_{n}"], dtype=float)  # (n_l, n_src)
            kk, ii = np.nonzero(np.ones(Bl.T.shape, bool))
            S.connect(i=kk, j=ii)
            S.B = Bl[ii, kk]
            S.summed_updaters["feedback_drive_post"].when = "feedback"
            S.summed_updaters["feedback_drive_post"].order = 2 * (m - l) - 1
            B[l] = S
            objects.append(S)

    # --- three-factor plasticity with the values of this step
    if plastic:
        for l in range(1, m + 1):
            if not learn[l - 1]:
                continue
            fwd[l].run_regularly(
                "modulator = phi_fb*(prob*(1 - prob))\n"
                "bias = bias - eta*(modulator + gamma*bias)",
                when="plasticity", order=0, name=f"{names[l]}_plasticity")
            W[l].run_regularly("w = w - eta*(modulator_post*spike_pre + gamma*w)",
                               when="plasticity", order=1, name=f"W_{names[l]}_plasticity")
        # node perturbation (Lansdell et al. 2020; spikefa.feedback): the reward of layer l is
        # R = e . (V^src - Vbar^src) / tau with e = phi_d(U^src), summed into a one-neuron group
        for l in learners:
            n, src = names[l], int(fb_src[l - 1])
            r = b2.NeuronGroup(1, "reward_sum : 1\nreward : 1", namespace=namespace(), name=f"{n}_reward", **common)
            terms = b2.Synapses(fwd[src], r, model="reward_sum_post = phi_fb_pre*(psp_pre - psp_baseline_pre) : 1 "
                                "(summed)\n", namespace=namespace(), name=f"{n}_reward_terms", **common)
            terms.connect(i=np.arange(sizes[src]), j=np.zeros(sizes[src], dtype=int))
            terms.summed_updaters["reward_sum_post"].when = "plasticity"
            terms.summed_updaters["reward_sum_post"].order = 2
            r.run_regularly("reward = reward_sum/tau", when="plasticity", order=3, name=f"{n}_reward_update")
            fb[l].reward = b2.linked_var(r, "reward", index=np.zeros(sizes[l], dtype=int))
            fb[l].run_regularly("estimate = reward*(spike - prob)/clip(prob*(1 - prob), var_floor, 1)",
                                when="plasticity", order=4, name=f"{n}_fb_estimate")
            B[l].run_regularly("B = B - eta_fb*(feedback_drive_post - estimate_post)*phi_pre",
                               when="plasticity", order=5, name=f"B_{n}_plasticity")
            objects += [r, terms]
        for src in reward_sources:
            fwd[src].run_regularly("psp_baseline = psp_baseline + baseline_rate*(psp - psp_baseline)",
                                   when="plasticity", order=6, name=f"{names[src]}_baseline")

    # --- recording
    if record_spikes:
        objects += [b2.SpikeMonitor(g, name=f"spikes_{g.name}", codeobj_class=codeobj) for g in fwd]
    if record_traces:
        objects += [b2.StateMonitor(g, "psp", record=True, when="end", name=f"trace_{g.name}",
                                    codeobj_class=codeobj) for g in fwd[1:]]
        objects += [b2.StateMonitor(h, "feedback_psp", record=True, when="end", name=f"trace_{h.name}",
                                    codeobj_class=codeobj) for h in fb[1:]]
    return SpikefaNetwork(*objects, step_dt=STEP, n_steps_max=n_steps_max, layer_names=names,
                          sizes=sizes, name=name)


def network_state(net):
    """Weights and state of a built network, keyed like the arrays it was built from.

    ``W_<l>`` is dense ``(n_pre, n_post)`` (removed synapses read 0), ``B_<l>`` is
    ``(n_l, n_src)``; ``V_<l>``, ``U_<l>``, ``phi_<l>``, ``b_<l>`` are per neuron.
    """
    out = {}
    names, sizes = net.layer_names, net.sizes
    for l in range(1, len(sizes)):
        n = names[l]
        S = net[f"W_{n}"]
        W = np.zeros((sizes[l - 1], sizes[l]))
        W[S.i[:], S.j[:]] = S.w[:]
        out[f"W_{n}"] = W
        out[f"b_{n}"] = np.array(net[n].bias[:])
        out[f"V_{n}"] = np.array(net[n].psp[:])
        out[f"U_{n}"] = np.array(net[f"{n}_fb"].feedback_psp[:])
        out[f"phi_{n}"] = np.array(net[f"{n}_fb"].phi[:])
        if f"B_{n}" in [obj.name for obj in net.objects]:
            S = net[f"B_{n}"]
            Bl = np.zeros((sizes[l], len(S.source)))
            Bl[S.j[:], S.i[:]] = S.B[:]
            out[f"B_{n}"] = Bl
        if "psp_baseline" in net[n].variables:
            out[f"Vbar_{n}"] = np.array(net[n].psp_baseline[:])
    return out


def spike_raster(net, name, start=0, stop=None):
    """Spikes of population ``name`` at steps ``start .. stop-1`` as uint8 ``(steps, n)``."""
    stop = net.steps_done if stop is None else stop
    mon = net[f"spikes_{name}"]
    steps = np.rint(np.asarray(mon.t_[:]) / float(net.step_dt)).astype(np.int64)
    idx = np.asarray(mon.i[:], dtype=np.int64)
    keep = (steps >= start) & (steps < stop)
    raster = np.zeros((stop - start, len(net[name])), np.uint8)
    raster[steps[keep] - start, idx[keep]] = 1
    return raster

# ==== END BRIAN2 MODEL ============================================================


def model_arrays(net: Network, images, labels, *, steps_per_image=None, uniforms=None, plastic=True,
                 feedback=None) -> dict:
    """Everything the Brian2 model needs, as plain arrays (the contents of the ``.npz``).

    Parameters
    ----------
    net : Network
        Its effective weights (``net.weights(l)``), biases, feedback matrices and state are
        exported, in float64.
    images, labels : arrays (n_img, n_0), (n_img,)
        Images shown one after the other, ``steps_per_image`` steps each (uint8 0..255 or
        floats in [0, 1]); the model applies ``min(x, p_max)`` itself.
    steps_per_image : int, optional
        Default ``train.steps_per_image`` (plastic) or ``test.steps_per_image``.
    uniforms : float64 array (T, N), optional
        Shared noise in the layout of :meth:`Network.run`; None: Brian2 draws its own.
    plastic, feedback : bool
        As in :meth:`Network.run`: the feedback sweep runs if ``plastic`` or ``feedback``.
    """
    cfg = net.config
    mp = cfg.model
    if steps_per_image is None:
        steps_per_image = cfg.train.steps_per_image if plastic else cfg.test.steps_per_image
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 2 or images.shape[1] != net.sizes[0]:
        raise ValueError(f"images must have shape (n, {net.sizes[0]}), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{images.shape[0]} images but labels of shape {labels.shape}")
    w = net.wiring
    names = net.names
    m = net.m
    out = dict(
        names=np.array(names), layers=np.asarray(net.sizes, np.int64), n_classes=np.int64(mp.n_classes),
        tau=np.float64(mp.tau), p_max=np.float64(mp.p_max), eta=np.float64(mp.eta), gamma=np.float64(mp.gamma),
        eta_feedback=np.float64(mp.eta_feedback), np_baseline_rate=np.float64(mp.np_baseline_rate),
        np_variance_floor=np.float64(mp.np_variance_floor), phi_d=np.array(mp.phi_d),
        feedback=np.array(mp.feedback), dtype=np.array(mp.dtype),
        plastic=np.bool_(plastic),
        # as Network.run: plasticity reads phi_d(U), so it runs the feedback sweep whatever
        # ``feedback`` says (plastic=True, feedback=False exported plasticity on stale U)
        feedback_on=np.bool_(plastic or bool(feedback)),
        learn=np.asarray(w.learn, bool), fb_on=np.asarray(w.on, bool), fb_src=np.asarray(w.src, np.int64),
        fb_transport=np.asarray(w.scale_idx, np.int64) >= 0, fb_learns=np.asarray(w.learns, bool),
        pixels=input_probabilities(images, 1.0), labels=labels.astype(np.int64),
        steps_per_image=np.int64(steps_per_image), readout=np.array(cfg.test.readout),
    )
    st = net.state
    for l in range(1, m + 1):
        n, sl = names[l], net.layer_slice(l)
        out[f"W_{n}"] = net.weights(l).astype(np.float64)
        out[f"b_{n}"] = net.biases(l).astype(np.float64)
        out[f"V_{n}"] = st.psp[sl].astype(np.float64)
        out[f"U_{n}"] = st.feedback_psp[sl].astype(np.float64)
        out[f"phi_{n}"] = st.phi_fb[sl].astype(np.float64)
        out[f"Vbar_{n}"] = st.psp_baseline[sl].astype(np.float64)
        if w.W_mask[l - 1] is not None:
            out[f"mask_{n}"] = np.asarray(w.W_mask[l - 1], np.uint8)
        if l < m and w.on[l - 1] and w.scale_idx[l - 1] < 0:
            out[f"B_{n}"] = net.feedback_matrix(l).astype(np.float64)
    if uniforms is not None:
        uniforms = np.asarray(uniforms)
        if uniforms.ndim != 2 or uniforms.shape[1] != net.n_units or uniforms.dtype != np.float64:
            raise ValueError(f"uniforms must be float64 of shape (T, {net.n_units}), got {uniforms.dtype} {uniforms.shape}")
        for l in range(m + 1):
            out[f"noise_{names[l]}"] = np.ascontiguousarray(uniforms[:, net.layer_slice(l)])
    return out


def to_brian2(net: Network, images, labels, *, steps_per_image=None, uniforms=None, plastic=True, feedback=None,
              target="numpy", record_spikes=True, record_traces=False, name="spikefa") -> SpikefaNetwork:
    """Build a :class:`brian2.Network` equivalent to ``net`` (weights, feedback and state now).

    Parameters
    ----------
    net : Network
        The spikefa network; it is not changed.
    images, labels : arrays
        Stimulus: images shown in order, ``steps_per_image`` steps each.
    steps_per_image : int, optional
        Default: the config's ``train.steps_per_image`` (``test.steps_per_image`` if not plastic).
    uniforms : float64 array (T, N), optional
        The uniforms spikefa used (layout of :meth:`Network.run`): Brian2 then takes the
        very same random decisions. The network refuses to run more than ``T`` steps.
    plastic, feedback : bool
        Training (plasticity on) or testing; feedback sweep on (default: ``plastic``).
    target : {'numpy', 'cython'} or None
        Brian2 code generation target (None: Brian2's preferences/device).
    record_spikes, record_traces : bool
        ``SpikeMonitor`` per forward population; ``StateMonitor`` of every V and U.

    Returns
    -------
    SpikefaNetwork
        A ``brian2.Network``; objects by name: ``net['h1']``, ``net['W_h1']``,
        ``net['B_h1']``, ``net['spikes_out']`` ...; ``run_steps(n)`` advances ``n`` steps.

    Notes
    -----
    With shared uniforms and ``model.dtype = "float64"`` the spikes agree exactly (up to a
    near-tie ``u`` within an ulp of ``p``) and PSPs and weights to a few ulp per step. A
    float32 spikefa network is exported at its float32 values but simulated in float64
    by Brian2: expect float32-sized differences, which can flip a near-threshold spike.
    """
    arrays = model_arrays(net, images, labels, steps_per_image=steps_per_image, uniforms=uniforms,
                          plastic=plastic, feedback=feedback)
    return build_network(arrays, target=target, record_spikes=record_spikes, record_traces=record_traces,
                         name=name)


def update_from_brian2(net: Network, bnet) -> Network:
    """Copy the weights, biases, learned feedback and state of ``bnet`` into ``net`` (in place).

    The decay scale is reset to 1 (the raw weights become Brian2's effective ones, rounded
    to the network's dtype) and pending deferred updates are dropped (Brian2's weights
    already hold every update). Use it to continue in spikefa where Brian2 stopped.
    """
    st = network_state(bnet)
    dtype = net.W[0].dtype
    net.state.n_pend[...] = 0
    net.invalidate_forward_cache()
    for l in range(1, net.m + 1):
        n, sl = net.names[l], net.layer_slice(l)
        net.W[l - 1][...] = st[f"W_{n}"].astype(dtype)
        net.b[l - 1][...] = st[f"b_{n}"].astype(dtype)
        net.state.psp[sl] = st[f"V_{n}"]
        net.state.feedback_psp[sl] = st[f"U_{n}"]
        net.state.phi_fb[sl] = st[f"phi_{n}"]
        if f"Vbar_{n}" in st:
            net.state.psp_baseline[sl] = st[f"Vbar_{n}"]
        if l < net.m and net.wiring.learns[l - 1] and f"B_{n}" in st:
            net.wiring.F[l - 1][...] = st[f"B_{n}"].astype(dtype)
    net.scale[:] = 1.0
    return net


def stimulus(cfg: Config, n_images: int, split: str = "train", key: int = 0):
    """``n_images`` images of the bundled MNIST subset and their labels, in a seeded order.

    For the training split this is the order in which ``spikefa train`` shows the subset
    from its start (``train.n_train`` images, epoch after epoch, shuffled as ``train.shuffle``
    says), so with ``train.dataset = "mnist-subset"`` an export with shared noise replays the
    start of a training run.
    """
    x, y = load_dataset("mnist-subset", split)
    if not 0 < n_images <= len(x):
        raise ValueError(f"the bundled subset holds {len(x)} {split} images; asked for {n_images}")
    if split == "train" and key == 0:
        # spikefa train's own stream (train.ImageOrder): the first train.n_train images,
        # epoch after epoch, shuffled or not as train.shuffle says (a permutation of the
        # whole subset was another order, other images even, when n_train or shuffle was set)
        from .train import ImageOrder

        n = min(cfg.train.n_train, len(x)) if cfg.train.n_train else len(x)
        order = ImageOrder(cfg, n)(np.arange(n_images))
    else:
        order = rng_for(cfg.run.seed, SEED_ORDER, key).permutation(len(x))[:n_images]
    return x[order], y[order]


# ------------------------------------------------------------------------ the script
_SCRIPT_HEAD = '''"""{name}: a spikefa model exported to Brian2 (spikefa {version}, Brian2 {b2version}).

{description}
Network {layers}, feedback variant '{feedback}', phi_d {phi_d}, {mode}.
Weights, biases, feedback weights, state and stimulus ({n_images} images x {k} steps) are in
{npz}, written beside this script{noise}.
Exported from: {source}

Run:     python {script} [--steps N] [--target numpy|cython|cpp_standalone] [--out results.npz]
         (with plasticity off it also prints the test error on the images it ran, by
         spikefa's read-outs: the output spikes at each image's last step, or summed)
Modify:  build_network() below is the whole model: one NeuronGroup per forward and per
         feedback population, Synapses for every projection, and every phase of a step as
         code in its own schedule slot (input, forward, error, feedback, plasticity; see
         SCHEDULE and spikefa's export documentation for why summed variables carry
         spikes within a step). The objects are named: net['h1'], net['W_h1'], net['B_h1'].
"""

import argparse
from pathlib import Path

import numpy as np
import brian2 as b2

'''

_SCRIPT_MAIN = '''

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).with_suffix(".npz")),
                        help="the arrays of the model (default: the .npz beside this script)")
    parser.add_argument("--steps", type=int,
                        help="steps to run (default: all the stimulus, and shared noise, the data file holds)")
    parser.add_argument("--target", default="numpy", choices=["numpy", "cython", "cpp_standalone"],
                        help="Brian2 code generation target (default numpy)")
    parser.add_argument("--out", help="save the spikes of every population (steps x units, uint8), the "
                                      "final weights and state, and when testing each image's guess "
                                      "(guess_last, guess_sum) to this .npz")
    args = parser.parse_args(argv)
    with np.load(args.data) as f:
        arrays = dict(f)
    target = args.target
    if target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=str(Path(args.data).with_suffix("")) + "_standalone")
        target = None
    net = build_network(arrays, target=target)
    steps = net.n_steps_max if args.steps is None else args.steps
    net.run_steps(steps)
    results = network_state(net)
    for name in net.layer_names:
        results[f"spikes_{name}"] = spike_raster(net, name)
        said = f"{name:>6}: {results[f'spikes_{name}'].mean():.4f} spikes per unit and step over {steps} steps"
        expected = arrays.get(f"spikefa_spikes_{name}")  # written by spikefa with the shared noise
        if expected is not None:
            n = min(steps, expected.shape[0])
            differ = np.flatnonzero((results[f"spikes_{name}"][:n] != expected[:n]).any(axis=1))
            said += (f"; the same spikes as spikefa in all {n} steps" if differ.size == 0 else
                     f"; NOT the same as spikefa's: {differ.size} of {n} steps differ, the first at step {differ[0]}")
        print(said)
    k = int(arrays["steps_per_image"])
    if not bool(arrays["plastic"]) and steps >= k:
        # the test read-outs of spikefa: each class's output spikes at the last of an
        # image's steps, or summed over them; the guess is the argmax (ties: lowest class)
        n_img, n_classes = steps // k, int(arrays["n_classes"])
        out = results[f"spikes_{net.layer_names[-1]}"][:n_img * k].astype(np.int64)
        per_step = out.reshape(n_img, k, n_classes, -1).sum(axis=3)
        labels = arrays["labels"][:n_img]
        errors = {}
        for readout, counts in (("last", per_step[:, -1]), ("sum", per_step.sum(axis=1))):
            results[f"guess_{readout}"] = np.argmax(counts, axis=1)
            errors[readout] = float(np.mean(results[f"guess_{readout}"] != labels))
        last = f"read-out at the last of each image's {k} steps"
        summed = "with the spikes summed over them"
        # first the run's own read-out (test.readout), as spikefa's test error is
        readout = str(arrays["readout"]) if "readout" in arrays else "last"
        if readout == "sum":
            print(f"test error {errors['sum']:.2%} on {n_img} images (read-out: output spikes summed over each "
                  f"image's {k} steps, the run's test.readout; {errors['last']:.2%} at the last step)")
        else:
            print(f"test error {errors['last']:.2%} on {n_img} images ({last}; {errors['sum']:.2%} {summed})")
            if readout != "last":
                print(f"(the run's test.readout is {readout!r}, which spikefa reads from firing probabilities; "
                      "this script reads spikes only)")
    if args.out:
        np.savez_compressed(args.out, **results)
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
'''


def _model_source() -> str:
    """The spikefa-free part of this module: the Brian2 model the scripts carry."""
    text = Path(__file__).read_text()
    start = text.index("# ==== BEGIN BRIAN2 MODEL")
    stop = text.index("# ==== END BRIAN2 MODEL")
    return text[start:stop].rstrip() + "\n"


def write_script(net: Network, path, images, labels, *, steps_per_image=None, uniforms=None, plastic=True,
                 feedback=None, source: str = "") -> tuple[Path, Path]:
    """Write a standalone Brian2 script of ``net`` and its arrays (``.npz`` beside it).

    The script holds the very code :func:`to_brian2` runs (copied from this module), so
    running it reproduces the in-memory export exactly. Arguments as for :func:`to_brian2`.

    Returns
    -------
    (script path, npz path)
    """
    path = Path(path)
    if path.suffix != ".py":
        raise ValueError(f"the script must end in .py, got {path}")
    npz = path.with_suffix(".npz")
    arrays = model_arrays(net, images, labels, steps_per_image=steps_per_image, uniforms=uniforms,
                          plastic=plastic, feedback=feedback)
    cfg = net.config
    k = int(arrays["steps_per_image"])
    n_img = arrays["pixels"].shape[0]
    if uniforms is not None:
        # spikefa's own spikes from the same arrays and noise: the script checks itself against them
        T = uniforms.shape[0]
        step_image = np.arange(T) // k
        ran = net.copy().run(np.asarray(uniforms), input_probabilities(images, cfg.model.p_max), step_image,
                             np.asarray(labels)[step_image], plastic=plastic, feedback=feedback)
        for l, n in enumerate(net.names):
            arrays[f"spikefa_spikes_{n}"] = ran["spikes"][:, net.layer_slice(l)].astype(np.uint8)
    noise = ("" if uniforms is None else
             f",\nwith uniforms for {uniforms.shape[0]} steps in spikefa's layout (shared noise: spikefa run on\n"
             "the same arrays takes the same random decisions; the script compares its spikes with\n"
             "spikefa's, which the .npz holds as spikefa_spikes_*)")
    head = _SCRIPT_HEAD.format(
        name=cfg.name, version=__version__, b2version=b2.__version__,
        description=cfg.description or "(no description)",
        layers="-".join(map(str, cfg.model.layers)), feedback=cfg.model.feedback, phi_d=cfg.model.phi_d,
        mode="plasticity on" if plastic else "plasticity off (test)", n_images=n_img, k=k, npz=npz.name,
        noise=noise, source=source or "a spikefa network in memory", script=path.name)
    from .runfile import write_whole

    path.parent.mkdir(parents=True, exist_ok=True)
    # each whole or not at all (a temporary file, then renamed): a full disk or a Ctrl-C
    # while the arrays were written left a truncated .npz ('File is not a zip file') over a
    # good one, beside a script that reads it; the script, which names the arrays, goes last
    write_whole(npz, lambda f: np.savez_compressed(f, **arrays))
    write_whole(path, lambda f: f.write((head + _model_source() + _SCRIPT_MAIN).encode()))
    return path, npz


def export_model(model, out, *, run_file=None, n_images: int = 100, noise_steps: int = 0, test: bool = False,
                 seed: int | None = None) -> tuple[Path, Path]:
    """The library call behind ``spikefa export-brian2``.

    Parameters
    ----------
    model : str, path or Config
        The model; a fresh network unless ``run_file`` is given.
    out : path
        The script (``.py``); its arrays go to the ``.npz`` beside it.
    run_file : path, optional
        Export the final weights and state of this run file instead (its model must be
        ``model``); of a run still running or cut off, the state of its checkpoint.
    n_images : int
        Stimulus: images of the bundled MNIST subset (see :func:`stimulus`).
    noise_steps : int
        Include the uniforms of spikefa's noise stream for this many steps (0: the script
        draws its own with ``rand()``).
    test : bool
        Plasticity off and test images (``test.steps_per_image``), instead of training.
    seed : int, optional
        Overrides ``run.seed`` (fresh weights, image order, noise).
    """
    cfg = load_config(model)
    if seed is not None:
        cfg = cfg.replace(run={"seed": seed})
    source = f"model {cfg.name}, fresh network (seed {cfg.run.seed})"
    if run_file is not None:
        from .runfile import Run
        from .train import network_from_file

        run = Run(run_file)
        diffs = [f"model.{k}: {v!r} (run) vs {getattr(cfg.model, k)!r}"
                 for k, v in run.config.to_dict()["model"].items() if cfg.to_dict()["model"][k] != v]
        if diffs:
            raise ConfigError(f"{run_file} was run with another model than {cfg.name}: " + "; ".join(diffs))
        # a run still running, or stopped, has no final weights yet: its checkpoint, as
        # spikefa test takes it
        net, steps, _, kind = network_from_file(run_file)
        source = (f"run file {run_file} (final weights and state, {steps} steps)" if kind == "final" else
                  f"run file {run_file} (its checkpoint at step {steps}: the run is not complete)")
    else:
        net = init_network(cfg)
    images, labels = stimulus(net.config, n_images, "test" if test else "train")
    k = cfg.test.steps_per_image if test else cfg.train.steps_per_image
    uniforms = None
    if noise_steps:
        if noise_steps > n_images * k:
            raise ValueError(f"{noise_steps} steps of noise but only {n_images} images x {k} steps of stimulus; "
                             f"raise --images to at least {-(-noise_steps // k)}")
        uniforms = rng_for(net.config.run.seed, SEED_NOISE).random((noise_steps, net.n_units))
    return write_script(net, out, images, labels, steps_per_image=k, uniforms=uniforms, plastic=not test,
                        source=source)


# ------------------------------------------------------------------------ speed
def brian2_ms_per_step(model="lillicrap2016-fig4", steps: int = 20, *, target: str = "numpy", warmup: int = 2,
                       dtype: str | None = None, threads: int = 0) -> float:
    """Milliseconds per training step of the Brian2 export (build and compilation excluded).

    Parameters
    ----------
    model : str, path, Config or Network
        Default: the paper's full-size network. A Network is exported as it is.
    steps : int
        Timed steps (plasticity and feedback on, Brian2's own noise, no monitors).
    target : {'numpy', 'cython', 'cpp_standalone'}
        Brian2 runtime targets, or C++ standalone (compiled once into a temporary folder;
        the time is the simulation loop that Brian2 reports, ``device._last_run_time``).
    warmup : int
        Untimed steps first (runtime targets: code generation and Cython compilation).
    dtype : str, optional
        The exported network's dtype (default the model's); Brian2 itself computes in float64.
    threads : int
        C++ standalone only: OpenMP threads (``prefs.devices.cpp_standalone.openmp_threads``;
        0, Brian2's default, runs one thread without OpenMP). The runtime targets run one.

    Notes
    -----
    The runtime targets pay a few tens of ms per ``run`` call to prepare the code
    objects; one call of ``steps`` steps is timed, so use ``steps >= 20``.
    """
    import time

    if isinstance(model, Network):
        net = model
    else:
        cfg = load_config(model)
        if dtype is not None:
            cfg = cfg.replace(model={"dtype": dtype})
        net = init_network(cfg)
    k = net.config.train.steps_per_image
    images, labels = stimulus(net.config, -(-(warmup + steps) // k))
    if target == "cpp_standalone":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="spikefa-brian2-") as folder:
            b2.set_device("cpp_standalone", directory=folder, build_on_run=False)
            old_threads = b2.prefs.devices.cpp_standalone.openmp_threads
            b2.prefs.devices.cpp_standalone.openmp_threads = int(threads)
            try:
                bnet = to_brian2(net, images, labels, steps_per_image=k, target=None, record_spikes=False)
                bnet.run_steps(steps)
                b2.device.build(directory=folder, compile=True, run=True)
                return 1e3 * float(b2.device._last_run_time) / steps
            finally:
                b2.prefs.devices.cpp_standalone.openmp_threads = old_threads
                b2.device.reinit()
                b2.set_device("runtime")
    if target not in TARGETS:
        raise ValueError(f"target {target!r} unknown; valid: {', '.join(TARGETS)}, cpp_standalone")
    bnet = to_brian2(net, images, labels, steps_per_image=k, target=target, record_spikes=False)
    if warmup:
        bnet.run_steps(warmup)
    tic = time.perf_counter()
    bnet.run_steps(steps)
    return 1e3 * (time.perf_counter() - tic) / steps
