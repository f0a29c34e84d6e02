"""Cross-validation of spikefa against its Brian2 export (``spikefa validate``).

Shared randomness (:func:`cross_validate`, the default): spikefa and the Brian2 network
built by :func:`spikefa.export.to_brian2` start from the same weights and state, see the
same images and read the same uniforms, so they must take the same random decisions.
Per population we report the first step where the spikes differ (if any) and the
largest differences of the forward PSPs ``V`` and feedback PSPs ``U`` (every step, every
neuron) and of ``W``, ``b`` and ``B`` (compared every ``check_every`` steps).
Where a quantity goes over its tolerance, the report says at which step it first did,
in the order the step computes them (where a difference that flips no spike started).

Tolerances. Both simulators evaluate the same expressions in the working precision but
sum and decay in different orders (spikefa: float64 sums and a float64 decay scale;
Brian2: ``bincount`` sums and the decay applied to every synapse), so a value may drift
by a few ulp per step. A quantity ``X`` passes when::

    max |X_brian2 - X_spikefa| <= TOL_FACTOR * eps(dtype) * steps * max |X_spikefa|

with ``TOL_FACTOR = 16`` and ``eps`` of the spikefa network's dtype (Brian2 always
computes in float64). Spikes must agree exactly. A one-step shift anywhere (a layer
driven by the previous step's spikes, noise read one row off, plasticity one step late)
gives differences of order 1e-4 or more and fails at once (``tests/test_brian2.py``).

Independent randomness (:func:`statistical_validate`, ``--statistical``): for each of
``seeds`` seeds both simulators start from the same initial weights but draw their own
noise, train ``train_steps`` steps and are tested (plasticity off, the model's
read-out) on ``n_test`` test images. Compared over seeds: the mean firing rate of every
population during training and the test error, each with a two-sided paired t-test
(pairs share the initial weights), Bonferroni-corrected over the comparisons at family
level ``alpha = 0.01``. This checks the two implementations in distribution; it cannot
see differences smaller than the seed-to-seed spread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .config import Config, load_config
from .network import SEED_NOISE, init_network, input_probabilities, rng_for
from .train import spike_counts

TOL_FACTOR = 16
WARMUP_STEPS = 5


@dataclass
class PopulationDiff:
    """One population's row of the comparison (NaN where a quantity does not exist)."""

    name: str
    units: int
    first_spike_diff: int | None
    spike_diffs: int
    rate: float
    diffs: dict  # quantity ('V', 'U', 'W', 'b', 'B') -> max |brian2 - spikefa|
    tols: dict  # quantity -> tolerance
    # quantity -> first step after which it was over its tolerance (V, U: every step; W, b,
    # B: the first comparison over it, every check_every steps); only quantities over it
    first_over: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.first_spike_diff is None and all(self.diffs[q] <= self.tols[q] for q in self.diffs)


@dataclass
class ValidationReport:
    """Result of :func:`cross_validate`; ``str(report)`` is the table ``spikefa validate`` prints."""

    model: str
    layers: tuple
    feedback: str
    dtype: str
    steps: int
    n_images: int
    steps_per_image: int
    seed: int
    target: str
    brian2_version: str
    rows: list
    extra: dict = field(default_factory=dict)  # other quantities (node perturbation's running mean of V)
    first_diff: dict | None = None  # the first differing spike: step, population, unit, u, p on both sides
    before_first_diff: dict | None = None  # quantity -> (max |d| before that step, tolerance)
    source: str = "fresh network"
    spikefa_ms_per_step: float = float("nan")
    brian2_ms_per_step: float = float("nan")

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and all(d <= t for d, t in self.extra.values())

    def __str__(self) -> str:
        return format_report(self)


def _sigma(v):
    return 1.0 / (1.0 + np.exp(-np.float64(v)))


def _fmt(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def format_report(rep: ValidationReport) -> str:
    """The per-population table, tolerances, speeds and the verdict."""
    layers = "-".join(map(str, rep.layers))
    lines = [
        f"spikefa vs Brian2 {rep.brian2_version} ({rep.target} target): model {rep.model} [{layers}], "
        f"feedback {rep.feedback}, spikefa {rep.dtype} / Brian2 float64",
        f"{rep.source}; {rep.steps} steps with plasticity, {rep.n_images} images x {rep.steps_per_image} steps "
        f"(bundled MNIST subset), shared noise (seed {rep.seed})",
        "",
        f"{'population':<10} {'units':>5} {'rate':>6} {'1st spike diff':>14} {'#diffs':>7} "
        f"{'max|dV|':>9} {'max|dU|':>9} {'max|dW|':>9} {'max|db|':>9} {'max|dB|':>9}  result",
    ]
    for r in rep.rows:
        first = "none" if r.first_spike_diff is None else f"step {r.first_spike_diff}"
        cells = [_fmt(r.diffs.get(q)) for q in ("V", "U", "W", "b", "B")]
        lines.append(f"{r.name:<10} {r.units:>5} {r.rate:>6.3f} {first:>14} {r.spike_diffs:>7} "
                     + " ".join(f"{c:>9}" for c in cells) + f"  {'pass' if r.passed else 'FAIL'}")
    for q, (d, t) in rep.extra.items():
        lines.append(f"{q}: max|d| {_fmt(d)} (tol {_fmt(t)}) {'pass' if d <= t else 'FAIL'}")
    m = len(rep.rows) - 1
    # within a step, in the order the step computes them: V bottom-up, U top-down, then plasticity
    phase = {"V": lambda l: l, "U": lambda l: 2 * m + 1 - l, "W": lambda l: 2 * m + l,
             "b": lambda l: 2 * m + l, "B": lambda l: 3 * m + l}
    over = sorted((step, phase[q](l), r.name, q) for l, r in enumerate(rep.rows) for q, step in r.first_over.items())
    if over:
        # spikes may all agree while V, U or weights drift: where it started, population by
        # population (step t: the values after step t; W, b, B are compared every few steps)
        said = [f"{name} {q} {'at' if q in ('V', 'U') else 'by'} step {step}" for step, _, name, q in over]
        lines.append("first step over tolerance: " + ", ".join(said[:6]) + (", ..." if len(said) > 6 else ""))
    if rep.first_diff is not None:
        f = rep.first_diff
        margin = min(abs(f["u"] - f["p_spikefa"]), abs(f["u"] - f["p_brian2"]))
        lines.append(f"first spike difference: step {f['step']}, {f['population']} unit {f['unit']}: u = {f['u']:.10f}, "
                     f"p = {f['p_spikefa']:.10f} (spikefa) / {f['p_brian2']:.10f} (Brian2), |u - p| = {margin:.1e}"
                     + (" (a near-tie: u lies between the two p)" if f["near_tie"] else ""))
        if rep.before_first_diff:
            lines.append(f"before step {f['step']}: " + ", ".join(
                f"max|d{q}| {_fmt(d)} ({'within' if d <= t else 'OVER'} tol {_fmt(t)})"
                for q, (d, t) in rep.before_first_diff.items()))
    eps = float(np.finfo(rep.dtype).eps)
    lines += [
        "",
        f"tolerance: spikes identical; max|dX| <= {TOL_FACTOR} * eps({rep.dtype}) * steps * max|X_spikefa| "
        f"= {TOL_FACTOR * eps * rep.steps:.2e} * max|X|, i.e.",
    ]
    for r in rep.rows:
        if r.tols:
            lines.append(f"  {r.name:<8} " + "  ".join(f"{q} {_fmt(t)}" for q, t in r.tols.items()))
    ratio = rep.brian2_ms_per_step / rep.spikefa_ms_per_step if rep.spikefa_ms_per_step > 0 else float("nan")
    lines += [
        f"speed: spikefa {rep.spikefa_ms_per_step:.2f} ms/step, Brian2 ({rep.target}) {rep.brian2_ms_per_step:.2f} "
        f"ms/step ({ratio:.1f}x), same steps, build and compile excluded",
        "PASS" if rep.passed else "FAIL",
    ]
    return "\n".join(lines)


def _config(model, dtype, seed) -> Config:
    cfg = load_config(model)
    changes = {}
    if dtype is not None:
        changes["model"] = {"dtype": dtype}
    if seed is not None:
        changes["run"] = {"seed": seed}
    return cfg.replace(**changes) if changes else cfg


def network_for(cfg: Config, run_file=None):
    """A fresh network of ``cfg``, or one holding the final weights and state of ``run_file``
    (trained with the same model, in any dtype; of a run not complete, its checkpoint) in
    ``cfg``'s dtype."""
    net = init_network(cfg)
    if run_file is None:
        return net
    from .config import ConfigError
    from .runfile import Run
    from .train import network_from_file

    run = Run(run_file)
    a, b = run.config.to_dict()["model"], cfg.to_dict()["model"]
    diffs = [f"model.{k}: {a[k]!r} (run) vs {b[k]!r}" for k in a if k != "dtype" and a[k] != b[k]]
    if diffs:
        raise ConfigError(f"{run_file} was run with another model than {cfg.name}: " + "; ".join(diffs))
    src, steps, _, kind = network_from_file(run_file)  # of a run not complete: its checkpoint, as export-brian2
    net.source = (f"final weights and state of {run_file}" if kind == "final" else
                  f"checkpoint (step {steps}) of {run_file}, a run not complete")
    net.invalidate_forward_cache()
    for l in range(1, net.m + 1):
        sl = net.layer_slice(l)
        net.W[l - 1][...] = src.weights(l)
        net.b[l - 1][...] = src.biases(l)
        net.state.psp[sl] = src.state.psp[sl]
        net.state.feedback_psp[sl] = src.state.feedback_psp[sl]
        net.state.phi_fb[sl] = src.state.phi_fb[sl]
        net.state.psp_baseline[sl] = src.state.psp_baseline[sl]
        # the run's feedback matrices and synapse masks, not fresh ones of cfg's run.seed: a
        # run trained with --seed 2 and validated with the model file's seed got the B (and
        # sparse-fa masks) of seed 1 beside its trained W, a network that never existed (for
        # sparse-fa a false FAIL: Brian2 drops the weights outside the wrong mask)
        net.wiring.W_mask[l - 1] = None if src.wiring.W_mask[l - 1] is None else src.wiring.W_mask[l - 1].copy()
        if l < net.m and net.wiring.scale_idx[l - 1] < 0:  # transport aliases W, copied above
            F = src.wiring.F[l - 1]
            net.wiring.F[l - 1] = F.copy() if F.dtype == np.int8 else F.astype(net.W[0].dtype)
            net.wiring.quantum[l - 1] = src.wiring.quantum[l - 1]
    return net


def cross_validate(model, steps: int = 500, *, dtype: str | None = "float64", seed: int | None = None,
                   target: str = "numpy", check_every: int = 100, run_file=None, brian2_uniforms=None,
                   modify_brian2=None) -> ValidationReport:
    """Run spikefa and its Brian2 export from the same weights and noise and compare them.

    Parameters
    ----------
    model : str, path or Config
        Model name or file; its network is initialised fresh (``run.seed``).
    steps : int
        Steps with plasticity on; images of the bundled subset, ``train.steps_per_image`` each.
    dtype : {'float64', 'float32'} or None
        spikefa's working dtype (None: the model's). Brian2 is always float64.
    seed : int, optional
        Overrides ``run.seed`` (weights, image order and noise).
    target : {'numpy', 'cython'}
        Brian2 code generation target.
    check_every : int
        Steps between comparisons of all weights (also compared after the first
        ``WARMUP_STEPS`` steps, which are not timed).
    run_file : path, optional
        Start from the final weights and state of this run (trained with ``model``)
        instead of a fresh network.
    brian2_uniforms : float64 array, optional
        Feed Brian2 other noise than spikefa (tests: a shifted copy must be caught).
    modify_brian2 : callable, optional
        Called with the Brian2 network before it runs (tests: a deliberately delayed
        variant must be caught).

    Returns
    -------
    ValidationReport
    """
    import brian2

    from . import export

    cfg = _config(model, dtype, seed)
    net = network_for(cfg, run_file)
    k = cfg.train.steps_per_image
    n_images = -(-steps // k)
    images, labels = export.stimulus(cfg, n_images)
    uniforms = rng_for(cfg.run.seed, SEED_NOISE).random((steps, net.n_units))
    bnet = export.to_brian2(net, images, labels, steps_per_image=k,
                            uniforms=uniforms if brian2_uniforms is None else brian2_uniforms,
                            target=target, record_traces=True)
    if modify_brian2 is not None:
        modify_brian2(bnet)

    in_prob = input_probabilities(images, cfg.model.p_max)
    step_image = np.arange(steps) // k
    rec = np.arange(net.n_units)
    N = net.n_units
    sf = dict(spikes=np.zeros((steps, N), np.uint8), psp=np.zeros((steps, N)), feedback_psp=np.zeros((steps, N)))
    m, names = net.m, net.names
    whist = {q: [[] for _ in range(m + 1)] for q in ("W", "b", "B")}  # (last step, max |d|) per check
    wmax = {q: np.zeros(m + 1) for q in ("W", "b", "B")}
    has_B = [False] * (m + 1)
    extra_d, extra_max = 0.0, 0.0
    t_sf, t_b2, timed_steps = 0.0, 0.0, 0
    # a short first block pays for compilation and code generation and is not timed
    bounds = sorted({0, min(WARMUP_STEPS, steps), *range(check_every, steps, check_every), steps})
    for c, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:])):
        tic = time.perf_counter()
        out = net.run(uniforms[t0:t1], in_prob, step_image[t0:t1], labels[step_image[t0:t1]], plastic=True,
                      rec_idx=rec)
        tsf = time.perf_counter() - tic
        for key in sf:
            sf[key][t0:t1] = out[key]
        tic = time.perf_counter()
        bnet.run_steps(t1 - t0)
        tb2 = time.perf_counter() - tic
        if c > 0 or len(bounds) == 2:
            t_sf, t_b2, timed_steps = t_sf + tsf, t_b2 + tb2, timed_steps + t1 - t0
        st = export.network_state(bnet)
        for l in range(1, m + 1):
            n = names[l]
            pairs = [("W", net.weights(l)), ("b", net.biases(l))]
            if f"B_{n}" in st:
                pairs.append(("B", net.feedback_matrix(l)))
                has_B[l] = True
            for q, ref in pairs:
                ref = ref.astype(np.float64)
                whist[q][l].append((t1 - 1, float(np.abs(st[f"{q}_{n}"] - ref).max())))
                wmax[q][l] = max(wmax[q][l], float(np.abs(ref).max()))
            if f"Vbar_{n}" in st:
                ref = net.state.psp_baseline[net.layer_slice(l)]
                extra_d = max(extra_d, float(np.abs(st[f"Vbar_{n}"] - ref).max()))
                extra_max = max(extra_max, float(np.abs(ref).max()))

    eps = float(np.finfo(net.W[0].dtype).eps)

    def tol(xmax):
        return TOL_FACTOR * eps * steps * float(xmax)

    rows, first_diff, traces = [], None, {}
    for l, n in enumerate(names):
        sl = net.layer_slice(l)
        raster = export.spike_raster(bnet, n, 0, steps)
        bad = raster != sf["spikes"][:, sl]
        bad_steps = np.nonzero(bad.any(axis=1))[0]
        diffs, tols, first_over = {}, {}, {}
        if l > 0:
            for q, name, mon, var in (("V", "psp", n, "psp"), ("U", "feedback_psp", f"{n}_fb", "feedback_psp")):
                ref = sf[name][:, sl]
                got = np.asarray(getattr(bnet[f"trace_{mon}"], var)[:]).T
                traces[q, l] = (got, ref)
                per_step = np.abs(got - ref).max(axis=1)
                diffs[q] = float(per_step.max())
                tols[q] = tol(np.abs(ref).max())
                if diffs[q] > tols[q]:
                    first_over[q] = int(np.argmax(per_step > tols[q]))
            for q in ("W", "b", "B"):
                if q != "B" or has_B[l]:
                    diffs[q] = max((d for _, d in whist[q][l]), default=0.0)
                    tols[q] = tol(wmax[q][l])
                    if diffs[q] > tols[q]:
                        first_over[q] = next(t for t, d in whist[q][l] if d > tols[q])
        rows.append(PopulationDiff(name=n, units=int(net.sizes[l]),
                                   first_spike_diff=int(bad_steps[0]) if bad_steps.size else None,
                                   spike_diffs=int(bad.sum()), rate=float(sf["spikes"][:, sl].mean()),
                                   diffs=diffs, tols=tols, first_over=first_over))
        if bad_steps.size and (first_diff is None or bad_steps[0] < first_diff["step"]):
            t = int(bad_steps[0])
            j = int(np.nonzero(bad[t])[0][0])
            u = float(uniforms[t, net.offsets[l] + j])
            if l == 0:
                p_sf = p_b2 = float(in_prob[step_image[t], j])
            else:
                p_sf = float(_sigma(sf["psp"][t, sl][j]))
                p_b2 = float(_sigma(np.asarray(bnet[f"trace_{n}"].psp[j, t])))
            first_diff = dict(step=t, population=n, unit=j, u=u, p_spikefa=p_sf, p_brian2=p_b2,
                              near_tie=min(p_sf, p_b2) <= u < max(p_sf, p_b2))
    before = None
    if first_diff is not None and first_diff["step"] > 0:
        t = first_diff["step"]
        before = {}
        for q in ("V", "U"):
            d = max(float(np.abs(got[:t] - ref[:t]).max()) for (qq, _), (got, ref) in traces.items() if qq == q)
            x = max(float(np.abs(ref[:t]).max()) for (qq, _), (got, ref) in traces.items() if qq == q)
            before[q] = (d, TOL_FACTOR * eps * t * x)
    extra = {"running mean of V (node perturbation)": (extra_d, tol(extra_max))} if extra_max > 0 else {}
    return ValidationReport(
        model=cfg.name, layers=tuple(cfg.model.layers), feedback=cfg.model.feedback, dtype=cfg.model.dtype,
        steps=steps, n_images=n_images, steps_per_image=k, seed=cfg.run.seed, target=target,
        brian2_version=brian2.__version__, rows=rows, extra=extra, first_diff=first_diff, before_first_diff=before,
        source="fresh network" if run_file is None else net.source,
        spikefa_ms_per_step=1e3 * t_sf / max(timed_steps, 1), brian2_ms_per_step=1e3 * t_b2 / max(timed_steps, 1))


# ------------------------------------------------------------------ independent noise
def _betacf(a, b, x):
    """Continued fraction of the regularised incomplete beta function (Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x):
    """Regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def paired_t_test(x, y) -> tuple[float, float]:
    """Two-sided paired t-test of ``mean(x - y) = 0``: returns ``(t, p)``.

    ``p = I_{df/(df+t^2)}(df/2, 1/2)`` with ``df = n - 1`` (Student's t distribution).
    Identical pairs give ``t = 0, p = 1``; a constant non-zero difference ``p = 0``.
    """
    d = np.asarray(x, float) - np.asarray(y, float)
    n = d.size
    if n < 2:
        raise ValueError("a paired t-test needs at least two pairs")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return t, _betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass
class StatisticalReport:
    """Result of :func:`statistical_validate`; ``str(report)`` is the table the CLI prints."""

    model: str
    layers: tuple
    feedback: str
    dtype: str
    seeds: list
    train_steps: int
    n_test: int
    readout: str
    target: str
    alpha: float
    values: dict  # quantity -> (spikefa per seed, Brian2 per seed)
    tests: dict  # quantity -> (t, p)
    model_readout: str = ""  # the model's own read-out (the report notes it when it is not the one compared)

    @property
    def level(self) -> float:
        """Per-comparison level (Bonferroni)."""
        return self.alpha / len(self.tests)

    @property
    def passed(self) -> bool:
        return all(p > self.level for _, p in self.tests.values())

    def __str__(self) -> str:
        layers = "-".join(map(str, self.layers))
        lines = [
            f"spikefa vs Brian2 ({self.target} target), independent noise: model {self.model} [{layers}], "
            f"feedback {self.feedback}, spikefa {self.dtype} / Brian2 float64",
            f"{len(self.seeds)} seeds ({', '.join(map(str, self.seeds))}), same initial weights per seed; "
            f"{self.train_steps} training steps, then test on {self.n_test} images (read-out '{self.readout}'"
            + (f"; the model's '{self.model_readout}' is compared as the summed spike count: Brian2 records spikes, "
               f"not sigma(V)" if self.model_readout and self.model_readout != self.readout else "") + ")",
            f"test: two-sided paired t-test per quantity, Bonferroni over {len(self.tests)} comparisons: "
            f"pass if p > {self.alpha:g}/{len(self.tests)} = {self.level:.4f}",
            "",
            f"{'quantity':<16} {'spikefa mean+-sd':>20} {'Brian2 mean+-sd':>20} {'t':>8} {'p':>8}  result",
        ]
        for q, (a, b) in self.values.items():
            t, p = self.tests[q]
            lines.append(f"{q:<16} {a.mean():>11.4f} +-{a.std(ddof=1):.4f} {b.mean():>11.4f} +-{b.std(ddof=1):.4f} "
                         f"{t:>8.2f} {p:>8.4f}  {'pass' if p > self.level else 'FAIL'}")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _readout_error(spikes_out, labels, M, n_classes, readout) -> float:
    """Test error from output spikes ``(n*M, n_out)``: the class with most spikes, ties low."""
    if readout not in ("last", "sum"):
        raise ValueError(f"read-out {readout!r} is not one of the spike counts 'last', 'sum'")
    counts = spike_counts(spikes_out, M, n_classes)[readout]
    return float(np.mean(np.argmax(counts, axis=1) != labels))


def statistical_validate(model, *, seeds: int = 5, train_steps: int = 500, n_test: int = 100,
                         dtype: str | None = None, seed: int | None = None, target: str = "numpy",
                         alpha: float = 0.01, run_file=None) -> StatisticalReport:
    """Compare spikefa and Brian2 with independent noise over several seeds.

    For seed ``s`` both start from the network ``init_network`` gives for ``s`` (or from
    ``run_file``), train on the same images (bundled subset, seeded order) for
    ``train_steps`` steps with their own noise (spikefa's stream; ``brian2.seed(s)``),
    then are tested with plasticity off on the first ``n_test`` test images of the
    subset, Brian2 in Brian2. Compared: the mean firing rate of every population during
    training and the test error.

    Parameters
    ----------
    seeds : int
        Number of seeds, ``run.seed, run.seed + 1, ...`` (``seed`` overrides ``run.seed``).
    dtype : str, optional
        spikefa's dtype (default: the model's).
    alpha : float
        Family-wise level of the paired t-tests (Bonferroni).
    run_file : path, optional
        Start every seed from the final weights and state of this run instead.
    """
    import brian2

    from . import export
    from .data import load_dataset
    from .train import evaluate

    base = _config(model, dtype, seed)
    seed_list = [base.run.seed + i for i in range(seeds)]
    # the Brian2 export records spikes, not sigma(V): the "prob" read-out is compared as the
    # summed spike count, on both sides, and the report says so
    readout = base.test.readout if base.test.readout in ("last", "sum") else "sum"
    M = base.test.steps_per_image
    k = base.train.steps_per_image
    test_x, test_y = load_dataset("mnist-subset", "test")
    test_x, test_y = test_x[:n_test], test_y[:n_test]
    names = None
    vals: dict = {}
    for s in seed_list:
        cfg = base.replace(run={"seed": s})
        net = network_for(cfg, run_file)
        start = net.copy()
        names = net.names
        n_img = -(-train_steps // k)
        images, labels = export.stimulus(cfg, n_img)
        step_image = np.arange(train_steps) // k
        uniforms = rng_for(s, SEED_NOISE).random((train_steps, net.n_units))
        out = net.run(uniforms, input_probabilities(images, cfg.model.p_max), step_image, labels[step_image],
                      plastic=True)
        rates_sf = [float(out["spikes"][:, net.layer_slice(l)].mean()) for l in range(net.m + 1)]
        err_sf = getattr(evaluate(net, test_x, test_y, seed_key=0), f"error_{readout}")

        brian2.seed(s)
        bnet = export.to_brian2(start, images, labels, steps_per_image=k, target=target)
        bnet.run_steps(train_steps)
        rates_b2 = [float(bnet[f"spikes_{n}"].num_spikes) / (train_steps * size)
                    for n, size in zip(names, bnet.sizes)]
        trained = export.update_from_brian2(start, bnet)
        tnet = export.to_brian2(trained, test_x, test_y, steps_per_image=M, plastic=False, target=target)
        tnet.run_steps(n_test * M)
        err_b2 = _readout_error(export.spike_raster(tnet, names[-1]), test_y, M, cfg.model.n_classes, readout)
        for q, a, b in [(f"rate {n}", rates_sf[l], rates_b2[l]) for l, n in enumerate(names)] + \
                [("test error", err_sf, err_b2)]:
            vals.setdefault(q, ([], []))
            vals[q][0].append(a)
            vals[q][1].append(b)
    values = {q: (np.array(a), np.array(b)) for q, (a, b) in vals.items()}
    tests = {q: paired_t_test(a, b) for q, (a, b) in values.items()}
    return StatisticalReport(model=base.name, layers=tuple(base.model.layers), feedback=base.model.feedback,
                             dtype=base.model.dtype, seeds=seed_list, train_steps=train_steps, n_test=n_test,
                             readout=readout, target=target, alpha=alpha, values=values, tests=tests,
                             model_readout=base.test.readout)
