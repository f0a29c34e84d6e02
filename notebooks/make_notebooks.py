"""Write the teaching-lab notebooks of ``notebooks/`` from the cells below.

The notebooks are generated, not edited by hand, so that their text can be reviewed as a
diff and they are committed without outputs::

    python notebooks/make_notebooks.py            # (re)write notebooks/*.ipynb
    python notebooks/make_notebooks.py --check    # exit 1 if a notebook differs from this file

Every lab reads ``SPIKEFA_QUICK`` from the environment: set (as the test suite does), it
runs a small version in seconds; unset (students), the size variables at the top decide.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def md(text):
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text):
    return ("code", textwrap.dedent(text).strip("\n"))


# ---------------------------------------------------------------------------------------
# Lab 1: one stochastic binary neuron
# ---------------------------------------------------------------------------------------
LAB1 = [
    md(r"""
    # Lab 1 — One stochastic binary neuron

    The network of Lillicrap et al. (2016, Fig. 4) is built from one kind of neuron. At
    every time step it adds its input into a **postsynaptic potential** (PSP) $V$, and then
    it spikes — or not — with a probability that depends on $V$. There is no threshold and
    no reset: a spike is a coin flip whose bias is set by the PSP.

    In this lab you build one such neuron with spikefa, look at its PSP and its spikes,
    see what the integration constant $\tau$ does, and measure how its firing rate depends
    on the rate of its inputs.

    **Running time:** under a minute. `STEPS` and `TRIALS` in the next cell set how long
    the simulations are; raise them for smoother curves.
    """),
    md(r"""
    ## The equations (docs/model.md, "One time step")

    One neuron with $n$ input neurons, at every time step $t$:

    1. **Input spikes.** Input $i$ spikes with probability $\min(x_i, p_{max})$, $p_{max}=0.95$.
       $x_i \in [0, 1]$ is the input's *rate* (for MNIST, the brightness of pixel $i$).
    2. **PSP.** $V(t) = (1-\tau)\,V(t-1) + \tau \left(\sum_i W_i\, s_i(t) + b\right)$,
       where $s_i(t) \in \{0, 1\}$ is the spike of input $i$, $W_i$ its synaptic weight
       and $b$ the neuron's bias. $\tau$ is the share of the *new* input in the PSP; a share
       $1-\tau$ of the old PSP is kept. The paper uses $\tau = 0.9$.
       **Careful:** this $\tau$ is not the membrane time constant of textbooks. There a
       *large* $\tau_m$ means a slow PSP; here a large $\tau$ means a *short* memory (at
       $\tau = 0.9$ the PSP forgets 90% of itself every step).
    3. **Spike.** The neuron spikes with probability $\sigma(V(t)) = 1/(1+e^{-V(t)})$.

    In the code a spike is `u < p` for a uniform random number `u` in $[0, 1)$: given the
    same random numbers, a simulation is exactly reproducible.
    """),
    code("""
    import os

    STEPS = 2000  # steps per simulation in the rate measurements; raise it for smoother curves
    TRIALS = 200  # trials averaged in the step response

    if os.environ.get("SPIKEFA_QUICK"):  # the automated test runs a small version
        STEPS, TRIALS = 200, 40
    """),
    code("""
    import matplotlib.pyplot as plt
    import numpy as np

    import spikefa
    from spikefa.network import init_network, input_probabilities

    print("spikefa", spikefa.__version__)
    """),
    md(r"""
    ## Build the neuron

    spikefa simulates layered networks; the smallest one has an input layer, one hidden
    layer and an output layer. Our neuron is the single unit of the hidden layer (`h1`).
    The two output units are there only because every network has an output layer; we
    ignore them. We compute in float64 so that the hand-written check below gives the same
    spikes and PSPs equal to about $10^{-15}$.

    `net.W[0]` holds the weights from the inputs to `h1`, one row per input neuron;
    `net.b[0]` the bias of `h1`.

    You need not read the code of `simulate` (and the `net.run(...)` call inside it): it
    draws the random numbers, shows the input rates one after the other and returns the
    input spikes, the neuron's spikes and its PSP $V$.
    """),
    code("""
    N_IN = 100  # input neurons
    BASE = spikefa.Config().replace(model={"layers": [N_IN, 1, 2], "n_classes": 2, "dtype": "float64"})
    NEURON = N_IN  # units are numbered layer after layer: inputs 0..N_IN-1, then our neuron


    def make_neuron(w=0.1, bias=-2.0, tau=0.9, n_syn=N_IN):
        \"\"\"A network whose hidden neuron gets the first n_syn inputs through synapses of weight w.\"\"\"
        net = init_network(BASE.replace(model={"tau": tau}))
        net.W[0][:, 0] = 0.0
        net.W[0][:n_syn, 0] = w
        net.b[0][0] = bias
        return net


    def simulate(net, rates, steps_each, seed=1):
        \"\"\"Show the input rates one after the other, steps_each steps each (no plasticity).\"\"\"
        rates = np.atleast_1d(rates).astype(float)
        in_prob = input_probabilities(np.repeat(rates[:, None], N_IN, axis=1), BASE.model.p_max)
        step_image = np.repeat(np.arange(len(rates)), steps_each)  # which rate is shown at each step
        uniforms = np.random.default_rng(seed).random((step_image.size, net.n_units))  # one u per unit and step
        out = net.run(uniforms, in_prob, step_image, np.zeros_like(step_image), plastic=False, rec_idx=[NEURON])
        return dict(inputs=out["spikes"][:, :N_IN].copy(), spikes=out["spikes"][:, NEURON].copy(),
                    V=out["psp"][:, 0].copy(), uniforms=uniforms, in_prob=in_prob, step_image=step_image)


    net = make_neuron()
    print("layers:", net.config.model.layers, " tau =", net.config.model.tau, " p_max =", net.config.model.p_max)
    """),
    md(r"""
    ## Raster and PSP trace

    The inputs fire at rate 0 for 40 steps, then at rate 0.3, then at rate 0.1. With
    $W_i = 0.1$ and $b = -2$, the PSP moves toward $0.1 \cdot 100 \cdot x - 2$: $-2$ at rate 0,
    $+1$ at rate 0.3, $-1$ at rate 0.1.
    """),
    code("""
    sim = simulate(net, [0.0, 0.3, 0.1], 40)
    steps = np.arange(sim["V"].size)

    fig, (a, b, c) = plt.subplots(3, 1, figsize=(9, 6), sharex=True, height_ratios=[2, 1.3, 0.5])
    t, i = np.nonzero(sim["inputs"])
    a.plot(t, i, "|", color="k", markersize=3)
    a.set_ylabel("input neuron")
    a.set_title("input spikes")
    b.plot(steps, sim["V"], color="k", label="PSP V")
    b.plot(steps, 1 / (1 + np.exp(-sim["V"])), color="tab:blue", label="spike probability σ(V)")
    b.axhline(0, color="0.8", linewidth=0.5)
    b.set_ylabel("V, and σ(V)")  # two quantities on one axis: the PSP and a probability in [0, 1]
    b.legend(fontsize="small", loc="upper left")
    c.vlines(np.flatnonzero(sim["spikes"]), 0, 1, color="tab:red")
    c.set_yticks([])
    c.set_ylabel("spikes")
    c.set_xlabel("time step")
    for ax in (a, b, c):
        for edge in (40, 80):
            ax.axvline(edge - 0.5, color="0.6", linestyle=":")
    plt.show()
    print(f"firing rate: {sim['spikes'][:40].mean():.2f} at input rate 0, "
          f"{sim['spikes'][40:80].mean():.2f} at 0.3, {sim['spikes'][80:].mean():.2f} at 0.1")
    """),
    md(r"""
    ## The neuron *is* the three equations

    Here are the three equations as a few lines of NumPy, fed with the same random numbers.
    If spikefa's compiled kernel did anything else, the spikes would differ. The PSPs agree
    to about $10^{-15}$, not exactly: spikefa adds the weights of the inputs that spiked one
    by one, the version by hand multiplies $w$ by their number, and float64 rounds the two
    differently in the last digits. A spike could flip only where a uniform `u` fell within
    about $10^{-15}$ of $\sigma(V)$.
    """),
    code("""
    def neuron_by_hand(uniforms, in_prob, step_image, w=0.1, bias=-2.0, tau=0.9):
        V, spikes, psp = 0.0, [], []
        for t in range(len(uniforms)):
            s_in = uniforms[t, :N_IN] < in_prob[step_image[t]]    # 1. input spikes
            V = (1 - tau) * V + tau * (w * s_in.sum() + bias)     # 2. PSP
            spikes.append(uniforms[t, NEURON] < 1 / (1 + np.exp(-V)))  # 3. spike
            psp.append(V)
        return np.array(spikes), np.array(psp)


    spikes, psp = neuron_by_hand(sim["uniforms"], sim["in_prob"], sim["step_image"])
    print("steps where the spikes differ:", int(np.sum(spikes != sim["spikes"])))
    print("largest PSP difference:", np.abs(psp - sim["V"]).max())
    assert np.array_equal(spikes, sim["spikes"])
    """),
    md(r"""
    ## What $\tau$ does

    The PSP is a running average of the input: each step it keeps $1-\tau$ of itself. The
    *mean* PSP therefore approaches its new level $V_\infty$ geometrically: if the input
    changes at step $t_0$, $\bar V(t) = V_\infty + (\bar V(t_0-1) - V_\infty)(1-\tau)^{t - t_0 + 1}$.
    A small $\tau$ averages over many steps: a smooth PSP that reacts slowly. A large $\tau$
    follows the input at once, noise included.

    Below: single trials (left) and the mean over `TRIALS` trials (right) when the input rate
    jumps from 0 to 0.3 at step 20, for three values of $\tau$. Dashed: the formula above
    (it lies right under the solid lines). The PSP starts at 0 and first settles at its
    resting level $b = -2$.
    """),
    code("""
    TAUS = [0.9, 0.3, 0.1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
    for tau, color in zip(TAUS, ["k", "tab:orange", "tab:green"]):
        trials = np.array([simulate(make_neuron(tau=tau), [0.0, 0.3], [20, 40], seed=s)["V"] for s in range(TRIALS)])
        a.plot(trials[0], color=color, label=f"τ = {tau}")
        b.plot(trials.mean(axis=0), color=color, label=f"τ = {tau}")
        mean_v = trials.mean(axis=0)
        v_inf, t = 0.1 * N_IN * 0.3 - 2.0, np.arange(20, 60)  # the level the input drives V toward
        b.plot(t, v_inf + (mean_v[19] - v_inf) * (1 - tau) ** (t - 20 + 1), color=color, linestyle="--", linewidth=1)
    a.set_title("one trial")
    b.set_title(f"mean of {TRIALS} trials (dashed: formula)")
    for ax in (a, b):
        ax.axvline(19.5, color="0.6", linestyle=":")
        ax.set_xlabel("time step")
    a.set_ylabel("PSP V")
    b.legend(fontsize="small")
    plt.show()
    """),
    md(r"""
    `simulate` also takes a list of step counts, one per rate, as used above. Note how the
    single trial with $\tau=0.9$ jumps around its mean: every step a different set of inputs
    spikes, and the PSP hardly averages over steps.

    ## Firing rate against input rate

    Now hold each input rate for `STEPS` steps and count the neuron's spikes, for two
    neurons with the same mean drive: one with **100 weak synapses** (weight 0.1), one with
    **10 strong synapses** (weight 1; the other 90 inputs are not connected). Both have
    $\bar V = 10 \min(x, p_{max}) - 2$. If $V$ were always at its mean, the rate would be
    $\sigma(\bar V)$ (dashed line). Error bars: ±2 binomial standard errors.
    """),
    code("""
    rates = np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(6, 4))
    for w, n_syn, color in [(0.1, 100, "k"), (1.0, 10, "tab:red")]:
        # the first 20 steps let the PSP settle and are not counted
        measured = np.array([simulate(make_neuron(w=w, n_syn=n_syn), x, STEPS + 20)["spikes"][20:].mean()
                             for x in rates])
        se = np.sqrt(measured * (1 - measured) / STEPS)
        ax.errorbar(rates, measured, yerr=2 * se, fmt="o", markersize=3, color=color,
                    label=f"measured: {n_syn} synapses of weight {w}")
    v_mean = 10 * np.minimum(rates, BASE.model.p_max) - 2.0
    ax.plot(rates, 1 / (1 + np.exp(-v_mean)), "--", color="tab:blue", label="σ(mean V)")
    ax.set_xlabel("input rate x (spike probability of each input)")
    ax.set_ylabel("output firing rate (spikes per step)")
    ax.legend(fontsize="small")
    plt.show()
    """),
    md(r"""
    ## Questions and exercises

    1. **Time constant.** The mean PSP keeps a share $1-\tau$ of its distance to the new
       level every step. After how many steps has it covered 90% of a jump, for
       $\tau = 0.9$ and $\tau = 0.1$? Check on the plot of the mean PSP. Which membrane time
       constant (in steps) corresponds to $\tau$? (Hint: $e^{-1/T} = 1-\tau$.)
    2. **Why $\tau = 0.9$?** In the paper's network a new image appears every 5 steps
       (`train.steps_per_image`). What would go wrong with $\tau = 0.1$? What would a PSP
       that averages over many steps be good for?
    3. **Noise and the sigmoid.** With the same mean PSP, the neuron with 10 strong
       synapses (red) fires clearly less than $\sigma(\bar V)$ at input rates from about 0.25 to
       0.6, where $\bar V > 0$. Explain with the fluctuations of $V$: how does the variance of
       $\sum_i W_i s_i$ depend on the weight and the number of synapses? (Hint: $\sigma$ curves
       downward above $V=0$ and upward below it.) By the same argument the red neuron should
       fire a little *more* than $\sigma(\bar V)$ at the lowest rates: can you see that in the
       plot, given the error bars? Would $\tau = 0.1$ bring the red points back to the dashed
       line? Predict, then try (`make_neuron(w=1.0, n_syn=10, tau=0.1)`).
    4. **Exercise.** Make half of the synapses inhibitory: `net = make_neuron(w=1.0, n_syn=10)`,
       then `net.W[0][:5, 0] = -1.0`. The mean PSP is now $-2$ at every input rate. Measure the
       firing rate against the input rate (e.g. copy the loop above): does it stay at
       $\sigma(-2) \approx 0.12$? Why is it lowest at $x = 0$, highest in the middle of the
       range, and why is it the same at $x = 0.95$ and $x = 1$ (think of $p_{max}$)?
    """),
]


# ---------------------------------------------------------------------------------------
# Lab 2: the weight-transport problem and feedback alignment
# ---------------------------------------------------------------------------------------
LAB2 = [
    md(r"""
    # Lab 2 — The weight-transport problem and feedback alignment

    Backpropagation teaches a hidden neuron with an error signal sent down **through the
    transpose of the forward weights**, $W^T e$. In a brain the forward synapses and the
    synapses that would carry errors back are different synapses on different neurons: how
    could the feedback synapses know the forward weights? This is the *weight-transport
    problem*.

    Lillicrap et al. (2016) showed that the feedback weights do not need to know: fixed,
    **random** feedback weights $B$ work — *feedback alignment* (FA). The forward weights
    change so that $B$ becomes useful.

    This lab reproduces the paper's Fig. 2 with small rate-based (not spiking) networks:
    a linear network learns a random linear map with backprop (BP), FA, and *shallow*
    learning (only the output layer learns).

    **Running time:** about 10 to 30 seconds with the defaults (`STEPS`, `RUNS` below).
    """),
    md(r"""
    ## The equations (docs/model.md, "The paper's other (rate-based) experiments"; paper, Fig. 2)

    Network 30–20–10, linear: $h = W_0 x$, $y = W h$. Target $y^* = T x$ with a fixed random
    $T$ (entries uniform in $[-1, 1]$), inputs $x \sim \mathcal N(0, I)$. Error $e = y^* - y$.

    | rule | output weights | hidden weights |
    | --- | --- | --- |
    | backprop (BP) | $\Delta W = \eta\, e\, h^T$ | $\Delta W_0 = \eta\, (W^T e)\, x^T$ |
    | feedback alignment (FA) | $\Delta W = \eta\, e\, h^T$ | $\Delta W_0 = \eta\, (B e)\, x^T$, $B$ fixed random |
    | shallow | $\Delta W = \eta\, e\, h^T$ | none |

    $W_0, W$ start small (uniform in $[-0.01, 0.01]$); $B$ is uniform in $[-0.5, 0.5]$.
    There are no biases (the calls below pass `learn_biases=False`, so they stay at 0).

    Learning is measured by the **normalized squared error** on 500 held-out inputs,
    $\mathrm{NSE} = \sum (y^* - y)^2 / \sum (y^* - \overline{y^*})^2$ (1: no better than
    guessing the mean). How close FA's hidden update is to BP's is the **angle** between
    $B e$ and $W^T e$: $\angle(a, b) = \arccos\frac{a\cdot b}{|a||b|}$.
    """),
    code("""
    import os

    STEPS = 5000  # training examples, one per step (the paper's Fig. 2a shows 5,000)
    RUNS = 10     # independent networks per rule (the paper: 20)

    if os.environ.get("SPIKEFA_QUICK"):  # the automated test runs a small version
        STEPS, RUNS = 800, 2
    """),
    code("""
    import time

    import matplotlib.pyplot as plt
    import numpy as np

    from spikefa import rate
    from spikefa.measures import angle_deg, normalized_squared_error

    task_rng = np.random.default_rng(1)
    T = task_rng.uniform(-1, 1, (10, 30))        # the linear map to learn
    x_test = task_rng.normal(size=(500, 30))     # held-out inputs
    y_test = x_test @ T.T
    ETA = 0.01                                   # learning rate (the same for every rule)
    RECORD = 20                                  # NSE every this many steps
    """),
    md(r"""
    ## Train

    `rate.init_network(..., runs=RUNS)` builds `RUNS` independent networks that learn side
    by side from the same examples. Every rule starts from the same weights and sees the
    same examples. For FA we also record, before every update, the angle between the
    hidden update FA makes ($B e$) and the one BP would make ($W^T e$), and every `RECORD`
    steps the angle between the forward weights $W$ and $B^T$.
    """),
    code("""
    nse, fa_angle, weight_angle = {}, None, None
    for name in ["bp", "fa", "shallow"]:
        tic = time.perf_counter()
        init_rng, data_rng = np.random.default_rng(0), np.random.default_rng(1)
        net = rate.init_network([30, 20, 10], "linear", init_rng, w_scale=0.01, feedback_scale=0.5, runs=RUNS)
        rule = rate.get_rule(name)
        curve, angles, w_angles = [], [], []
        for step in range(STEPS):
            if step % RECORD == 0:
                curve.append([normalized_squared_error(y_test, y) for y in rate.predict(net, x_test)])
                if name == "fa":
                    w_angles.append(rate.weight_angle(net))
            x = data_rng.normal(size=(1, 30))
            y_star = x @ T.T
            if name == "fa":
                e = y_star - rate.predict(net, x)      # the error this step learns from
                angles.append(rate.modulator_angle(net, e))
            rate.train_step(net, rule, x, y_star, ETA, learn_biases=False)  # no biases, as in the equations
        nse[name] = np.array(curve)                    # (records, runs)
        if name == "fa":
            fa_angle, weight_angle = np.array(angles), np.array(w_angles)
        print(f"{name:8s} final NSE {nse[name][-1].mean():.2e} (mean of {RUNS} runs)  {time.perf_counter() - tic:.1f} s")
    """),
    code("""
    x = np.arange(len(nse["bp"])) * RECORD
    colors = {"bp": "k", "fa": "tab:green", "shallow": "0.6", "np": "tab:orange"}  # np: exercise 2
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, curve in nse.items():
        a.plot(x, curve.mean(axis=1), color=colors[name], label=name)
        a.fill_between(x, curve.min(axis=1), curve.max(axis=1), color=colors[name], alpha=0.2, linewidth=0)
    a.set_yscale("log")  # BP and FA go on down to rounding level
    a.set_xlabel("examples")
    a.set_ylabel("NSE (test, log scale)")
    a.set_title("a  learning a linear map (band: all runs)", loc="left")
    a.legend()

    window = max(1, STEPS // 100)  # average the per-step angle over windows of steps
    smooth = fa_angle.mean(axis=1)[: STEPS // window * window].reshape(-1, window).mean(axis=1)
    b.plot(np.arange(smooth.size) * window, smooth, color="tab:green", label="∠(B e, Wᵀ e): FA vs BP update")
    b.plot(x, weight_angle.mean(axis=1), color="tab:blue", label="∠(W, Bᵀ): forward vs feedback weights")
    b.axhline(90, color="0.6", linestyle=":")
    b.set_ylim(0, 100)
    b.set_xlabel("examples")
    b.set_ylabel("angle (degrees)")
    b.set_title("b  FA's updates align with BP's", loc="left")
    b.legend(fontsize="small")
    plt.show()
    print(f"angle between FA and BP hidden updates: {fa_angle[:10].mean():.0f} degrees over the first 10 steps, "
          f"lowest {smooth.min():.0f} (around example {smooth.argmin() * window:,}), "
          f"{fa_angle[-max(1, STEPS // 20):].mean():.0f} over the last 5%")
    """),
    md(r"""
    The band in (a) spans the `RUNS` networks (note the log scale). FA learns about as fast
    as BP (here it even reaches an NSE of 0.01 a little sooner), even though its hidden error signal $Be$ starts out nearly
    at right angles (90°) to the one backprop would send. Both keep falling steadily, to an
    NSE between about $10^{-27}$ and $10^{-31}$ after 5,000 examples: the task is linear and
    noise-free, so the network can learn $T$ *exactly*, and only floating-point rounding
    (float64 keeps about 16 digits) stops the error from falling further.

    In (b) the angle between FA's and BP's hidden updates falls to about 25° within the
    first 1,500 or so examples and stays there; near the end it rises again. By then the
    error $e$ is so small that rounding errors make up a noticeable part of it, so its
    direction, and those of $Be$ and $W^Te$, are partly rounding noise: ignore that last
    rise. (In float32, which keeps about 7 digits, the same rise comes after about 1,500
    examples, as soon as the NSE reaches its float32 floor near $10^{-14}$.)

    Shallow learning stays near NSE 1: the hidden activity stays tiny (its weights start at
    ±0.01 and never learn), so the output layer learns very slowly, and even at best it
    could only use the 20 directions of the input that the fixed $W_0$ passes on.

    The package runs the same experiment, with node perturbation and 20 runs, as
    `spikefa experiment fig2` (a minute or two; `--quick` for seconds).

    ## Questions and exercises

    1. **Who moves?** $B$ never changes, yet the angle between $Be$ and $W^Te$ falls. Which
       weights changed? Use the blue curve, and explain in one sentence why learning with
       $B$ pushes $W$ toward $B^T$ (hint: $W_0$ learns from $Be$, then $W$ learns from the
       hidden activity that $W_0$ produces).
    2. **Reinforcement learning.** Add node perturbation to the comparison:
       `rate.get_rule("np", sigma=0.01)` with learning rate `2e-3`, and pass
       `rng=np.random.default_rng(2)` (create it once, before the loop) and
       `learn_biases=False` to `rate.train_step`. Every hidden neuron receives the same
       scalar reward; the output layer learns from its error $e$, as in the other rules (on
       the noisy pass), as in the paper. How many examples do FA and node perturbation need
       to bring the mean NSE below 0.01? (Node perturbation does not reach FA's rounding
       level in 5,000 examples: compare where the two curves level off, too.)
    3. **What does $B$ need?** Before training FA, try a 10 times larger $B$
       (`net.B[0] *= 10`), $B$ with only positive entries (`np.abs`), or $B = 0$ (then skip the
       angle: an angle with a zero vector is undefined). Which still learn, and why?
       Warning: with the 10 times larger $B$ the run blows up within a few dozen examples
       (overflow warnings, then NaN): $W_0$ learns from $Be$, so a 10 times larger $B$ is a
       10 times larger learning rate for $W_0$. What would you change to make it learn?
    """),
]


# ---------------------------------------------------------------------------------------
# Lab 3: the spiking network learns
# ---------------------------------------------------------------------------------------
LAB3 = [
    md(r"""
    # Lab 3 — The spiking network learns

    Now the whole network of Lillicrap et al. (2016, Fig. 4): layers of the stochastic
    binary neurons of Lab 1, a **forward** population that carries the image up, and a
    **feedback** population in every layer that carries the error down through fixed random
    weights $B$ (Lab 2). Forward and feedback activity run *at the same time*, step after
    step, and the synapses change at every step: there are no separate phases, no resets
    between images. Learning happens continuously while the network runs.

    You train the `small` preset (784–300–300–300–100, 10 output neurons per digit) on the
    bundled MNIST subset (2,000 training and 500 test images), then look at its activity
    early, in the middle and late in training, in the layout of the paper's Fig. 4.

    **Running time:** about a minute with the defaults (`EPOCHS = 10`). The run file goes
    to a temporary folder (printed below).
    """),
    md(r"""
    ## The equations (docs/model.md, "One time step"; every layer $l = 1..m$, every step)

    1. Input spikes $s^0_i = 1$ with probability $\min(x_i, 0.95)$, $x_i$ = pixel brightness.
    2. **Forward sweep**, bottom-up: $V^l \leftarrow (1-\tau)V^l + \tau(W^l s^{l-1} + b^l)$, and
       neuron $j$ spikes ($s^l_j = 1$) with probability $\sigma(V^l_j)$.
    3. **Error neurons** (the top layer's feedback population):
       $U^m \leftarrow (1-\tau)U^m + \tau(s^m - y^*)$, where $y^*_j = 1$ if output neuron $j$
       belongs to the digit shown, else 0.
    4. **Feedback sweep**, top-down: $U^l \leftarrow (1-\tau)U^l + \tau\, B^l \tanh(U^{l+1})$.
       Feedback never changes forward activity.
    5. **Three-factor plasticity**: the *delta* (modulatory signal) of neuron $j$ is
       $\delta^l_j = \tanh(U^l_j)\,\sigma'(V^l_j)$, and every synapse onto it changes by
       $\Delta W^l_{ji} = -\eta\,(\delta^l_j\, s^{l-1}_i + \gamma W^l_{ji})$:
       presynaptic spike × postsynaptic slope $\sigma'(V)$ × feedback signal.

    Each training image is shown for 5 steps. The test shows each test image for 5 steps
    with plasticity off; the guess is the digit whose 10 output neurons spike most.
    """),
    code("""
    import os

    MODEL = "small"  # 784-300-300-300-100 on the bundled MNIST subset
    EPOCHS = 10      # passes over the 2,000 training images (5 steps each); more epochs, lower error

    QUICK = bool(os.environ.get("SPIKEFA_QUICK"))  # the automated test runs a small version
    if QUICK:
        MODEL, EPOCHS = "tiny", 0.5
    """),
    code("""
    import tempfile
    import warnings
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.display import display

    import spikefa
    from spikefa import plots
    from spikefa.train import train

    OUT_DIR = Path(tempfile.mkdtemp(prefix="spikefa-lab3-"))  # everything this lab writes goes here
    print("run files go to", OUT_DIR)
    # without ipywidgets the progress bar is plain text; tqdm would warn about that
    warnings.filterwarnings("ignore", message="IProgress not found")
    """),
    md(r"""
    ## Configure and train

    A model file (`models/small.toml`) sets every parameter; `replace` changes a few for
    this lab. The `[record]` table says what to save besides the test error:

    - `"fig4"`: the probes of the paper's Fig. 4 — spikes of 50 random neurons of each
      hidden layer and of all output neurons, and one forward neuron's PSP $V$ and delta;
    - one more probe for the same neuron's feedback PSP $U$;
    - `windows`: record them only in three 200-step windows — at the start, the middle and
      the end of training;
    - `measure_every`: firing rates and alignment angles every 1,000 steps.

    `test_every` (in `train`) is set to the same number, 1,000, but it counts training
    *images*, not steps: a test every 1,000 images is one every 5,000 steps.
    """),
    code("""
    cfg = spikefa.load_config(MODEL).replace(
        train={"epochs": EPOCHS, "test_every": 250 if QUICK else 1000},  # test every this many IMAGES
        record={"probes": ["fig4", "feedback_psp layers=hidden random=1"],
                "windows": ["0:200", "50%:200", "end:200"], "measure_every": 500 if QUICK else 1000})  # STEPS
    print(cfg.description)
    print("layers", cfg.model.layers, "| tau", cfg.model.tau, "| eta", cfg.model.eta,
          "| steps per image", cfg.train.steps_per_image, "| feedback", cfg.model.feedback)
    """),
    code("""
    # overwrite=True: running this cell again (after changing cfg) starts the run anew
    result = train(cfg, out=OUT_DIR / f"lab3-{MODEL}.h5", progress=not QUICK, overwrite=True)
    print(f"test error {result.test_error:.1%} after {result.epochs:g} epochs "
          f"({result.steps:,} steps, {result.wall_s:.0f} s)")
    run = spikefa.load(result.path)
    """),
    md(r"""
    ## The test error falls

    The network was tested on the 500 test images every 1,000 training images. Solid: the
    guess from the spikes at the last of the 5 test steps (the paper's read-out); dotted:
    from the spikes summed over the 5 steps.
    """),
    code("""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plots.test_error(run, ax=ax, x="images")
    ax.set_title(f"{cfg.name}: test error on {run.test_curve()['n_test'][-1]} images")
    plt.show()
    """),
    md(r"""
    ## The paper's Fig. 4 layout

    Three columns: early, middle and late in training (200 steps each). Rows, top to bottom:
    the digits shown (5 steps each); spike rasters of 50 neurons of each hidden layer; the
    output neurons grouped by digit, with the digit shown shaded in blue; and one hidden
    neuron's PSP $V$ (black) with its delta (red).
    """),
    code("""
    display(plots.fig4(run))
    """),
    md(r"""
    Early on, the output neurons fire for every digit alike. Late in training, the 10
    neurons of the digit shown fire together for as long as it is shown, and the others stay
    mostly silent. The hidden layers develop their own structure: some neurons nearly always
    fire, others hardly ever, others follow the image.

    ## One neuron, three moments

    The same neuron's forward PSP $V$, feedback PSP $U$ and delta
    $\delta = \tanh(U)\,\sigma'(V)$, in the three windows.
    """),
    code("""
    layer = next(l for l, kinds in run.recorded().items() if "feedback_psp" in kinds)
    fig, axes = plt.subplots(3, 3, figsize=(12, 6), sharex="col", sharey="row")
    for col, name in enumerate(["early", "middle", "late"]):
        for row, kind in enumerate(["psp", "feedback_psp", "modulator"]):
            tr = run.trace(layer, kind, col)  # window number col
            axes[row, col].plot(tr.step, tr.values[:, 0], color=["k", "tab:purple", "tab:red"][row], linewidth=0.8)
        axes[0, col].set_title(f"{name} (steps {tr.step[0]:,} to {tr.step[-1]:,})")
        axes[2, col].set_xlabel("step")
        v = run.trace(layer, "psp", col).values[:, 0]
        d = run.trace(layer, "modulator", col).values[:, 0]
        print(f"{name:6s}: mean |V| = {np.abs(v).mean():.2f}, mean |delta| = {np.abs(d).mean():.4f}")
    for row, label in enumerate(["V (forward PSP)", "U (feedback PSP)", "delta"]):
        axes[row, 0].set_ylabel(label)
    fig.suptitle(f"neuron {tr.neurons[0]} of layer {layer}")
    plt.show()
    """),
    md(r"""
    ## Feedback alignment in the spiking network

    Every 1,000 steps the run measured, for each hidden layer $l$, the angle between the
    forward weights $(W^{l+1})^T$ and the feedback weights $B^l$ (solid), and between the
    deltas that $B^l$ and $(W^{l+1})^T$ would send for the current error (dashed; the legend
    calls them "modulators", spikefa's name for the deltas). At 90° the
    feedback would be useless; below it, it points the right way. The dotted lines mark
    how low FA can be expected to bring the solid ones (not a hard limit: `transport`
    sits at 0°): the error that decides the guess comes from 10 classes, so it spans
    only 10 of a layer's directions, FA's weight changes lie there, and a $W$ that had
    learned $B$ perfectly there (and nothing else) would still sit on the dotted line.
    """),
    code("""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    plots.angles(run, ax=ax)
    plt.show()
    """),
    md(r"""
    Measured inside that 10-dimensional class-error subspace, the alignment is much
    clearer (`spikefa.alignment`; `spikefa align RUN.h5` on the command line):
    """),
    code("""
    from spikefa.alignment import class_alignment
    from spikefa.train import network_from_run

    for r in class_alignment(network_from_run(run)):
        print(f"{r['layer']}: flattened {r['flat']:.1f} deg (W = B in the class-error subspace: {r['ceiling']:.1f}), "
              f"in the class-error subspace {r['subspace']:.1f} deg")
    """),
    md(r"""
    ## Questions and exercises

    1. **Rasters.** A 5-step image is only a few pixels wide in the figure above; zoom in
       with `display(plots.fig4(run, steps=40))` (the first 40 steps of each window). In the
       late column, at which step of a new digit do its output neurons start to fire? The
       forward sweep carries the input through all layers within one step, bottom-up
       (equation 2): no layer adds a delay. What does such a one-step sweep imply for how
       fast the output can follow the image, and what limits it instead (think of $\tau$,
       Lab 1)? Would a real brain, with a few milliseconds of delay per synapse, work the
       same way?
    2. **Delta.** Why is the delta smaller late in training? Find two reasons in the
       equation $\delta = \tanh(U)\,\sigma'(V)$ and check each on the plots above (hint:
       what happens to $\sigma'(V)$ when $|V|$ grows?).
    3. **Alignment.** The weight angles fall below 90°, but stay far from 0°. Why is
       partial alignment enough for learning? (Hint: what does an angle below 90° between
       the delta FA sends and the one backprop would send mean for the direction of each
       weight change?)
    4. **Exercise.** The paper's Fig. 4 shows each image for 50 steps. Train again with
       `train={"epochs": 1, "test_every": 1000, "steps_per_image": 50}` in `replace` and
       compare the rasters (running the training cell again overwrites the first run; give
       it another `out=` to keep both). This changes only training: the test still shows each test
       image for `test.steps_per_image` = 5 steps.
    """),
]


# ---------------------------------------------------------------------------------------
# Lab 4: which feedback works?
# ---------------------------------------------------------------------------------------
LAB4 = [
    md(r"""
    # Lab 4 — Which feedback works?

    Lab 3 trained the network with feedback alignment. What if the feedback carried the
    true transposed forward weights, as backprop would? Or came straight from the error
    neurons? Or did not exist? spikefa runs the same network with six kinds of feedback
    (`model.feedback`); only what the feedback population of hidden layer $l$ listens to
    changes:

    | variant | feedback into hidden layer $l$ | learns |
    | --- | --- | --- |
    | `fa` | $B^l \tanh(U^{l+1})$, $B^l$ fixed random (feedback alignment) | $W$, $b$ |
    | `transport` | $(W^{l+1})^T \tanh(U^{l+1})$: backprop's weight transport | $W$, $b$ |
    | `dfa` | $D^l \tanh(U^m)$, straight from the error neurons (Nøkland 2016) | $W$, $b$ |
    | `shallow` | nothing: only the top layer learns | top $W$, $b$ |
    | `sparse-fa` | as `fa` with half of $W$ and $B$ removed for good | $W$, $b$ |
    | `learned` | as `fa`, and $B$ learns by node perturbation (Lansdell et al. 2020) | $W$, $b$, $B$ |

    Every variant starts from the same forward weights (same seed; `sparse-fa` then removes
    half of them) and sees the images in the same order, so the differences come from the
    feedback alone. But there is one seed per variant, and after 3 epochs another seed can
    move a variant's test error by 10 points or more: only large differences mean something
    (see exercise 3).

    **Running time:** about 1 to 2 minutes with the defaults (`small`, `EPOCHS = 3` per
    variant).
    """),
    md(r"""
    ## The equations

    As in Lab 3. The only line that changes is the feedback sweep (phase 4),
    $U^l \leftarrow (1-\tau)U^l + \tau \cdot (\text{what the table says})$, and for `learned` a
    learning rule for $B$. The delta of every learning neuron is still
    $\delta = \tanh(U)\,\sigma'(V)$ and the weight change $\Delta W = -\eta\,(\delta\, s_{pre} + \gamma W)$.

    Alignment of hidden layer $l$: the angle between $(W^{l+1})^T$ and the feedback matrix
    (for `transport` it is 0° by construction; for `dfa` it is defined only for the top
    hidden layer, whose source is the layer above it; for `shallow` not at all).
    """),
    code("""
    import os

    MODEL = "small"  # 784-300-300-300-100 on the bundled MNIST subset
    EPOCHS = 3       # per variant; the small preset's default is 10 (then ~3x longer)
    VARIANTS = ["fa", "transport", "dfa", "shallow", "sparse-fa", "learned"]

    QUICK = bool(os.environ.get("SPIKEFA_QUICK"))  # the automated test runs a small version
    if QUICK:
        MODEL, EPOCHS = "tiny", 1.0  # 784-100-100-100, 10,000 steps per variant
    """),
    code("""
    import tempfile
    import time
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np

    import spikefa
    from spikefa.train import train

    OUT_DIR = Path(tempfile.mkdtemp(prefix="spikefa-lab4-"))  # everything this lab writes goes here
    print("run files go to", OUT_DIR)
    """),
    code("""
    runs = {}
    for variant in VARIANTS:
        cfg = spikefa.load_config(MODEL).replace(
            model={"feedback": variant},
            train={"epochs": EPOCHS, "test_every": 1000},           # test every 1,000 images
            record={"measure_every": 500 if QUICK else 1000})       # angles every this many steps
        res = train(cfg, out=OUT_DIR / f"{MODEL}-{variant}.h5", progress=False, overwrite=True)
        runs[variant] = spikefa.load(res.path)
        print(f"{variant:10s} test error {res.test_error:6.1%}   ({res.wall_s:.0f} s)")
    """),
    md(r"""
    ## Test error over training
    """),
    code("""
    colors = {"fa": "tab:green", "transport": "k", "dfa": "tab:blue", "shallow": "0.6", "sparse-fa": "tab:olive",
              "learned": "tab:purple"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4), width_ratios=[2, 1])
    for variant, run in runs.items():
        c = run.test_curve()
        a.plot(c["images"], 100 * c["error"], marker="o", markersize=3, color=colors[variant], label=variant)
    a.axhline(90, color="0.8", linestyle=":", label="chance (90%)")
    a.set_xlabel("training images")
    a.set_ylabel(f"test error (%, {c['n_test'][-1]} images)")
    a.set_ylim(0, 100)
    a.legend(fontsize="small", ncol=2)
    final = [100 * runs[v].test_error for v in VARIANTS]
    b.barh(VARIANTS, final, color=[colors[v] for v in VARIANTS])
    b.invert_yaxis()
    b.set_xlabel("final test error (%)")
    for y, value in enumerate(final):
        b.text(value + 1, y, f"{value:.1f}", va="center", fontsize="small")
    b.set_xlim(0, 105)
    plt.show()
    """),
    md(r"""
    **Reading the results.** The bars are a snapshot after 3 epochs, not a final ranking:
    the curves of `fa`, `transport` and `sparse-fa` are still falling steeply at the end.
    At the default size we measured test errors of 26.0% for `dfa`, 27.4% for `fa`, 44.8%
    for `transport`, 54.6% for `learned`, 76.6% for `sparse-fa` and 92.4% for `shallow`
    (chance: 90%). Before drawing conclusions, remember that each bar is one seed, early in
    training, at one learning rate: the exercises below ask which differences survive
    a closer look.
    """),
    md(r"""
    ## Alignment angles

    Left: the angle between $(W^{l+1})^T$ and the feedback matrix of the **top** hidden layer
    (the only one every variant with feedback defines). Right: the same for the **first**
    hidden layer. The table below gives these angles at the end of training for every
    hidden layer (`W-B`), and the angle between the delta the feedback sends and the one
    $(W^{l+1})^T$ would send for the current error (`d-d`). The `W-B` angles change smoothly;
    each `d-d` value is a single sample, taken at the last measurement for whatever error
    the network made at that step, and it often jumps by 10° to 30° from one measurement
    to the next: read the `d-d` columns as rough values only.
    """),
    code("""
    any_run = next(iter(runs.values()))
    hidden = any_run.layers[1:-1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    rows = []
    for variant, run in runs.items():
        a = run.angles()
        for ax, layer in zip(axes, [hidden[-1], hidden[0]]):
            w = a["weight"][layer]
            if np.isfinite(w).any():
                ax.plot(a["step"], w, color=colors[variant], label=variant)
        rows.append((variant, *(a["weight"][layer][-1] for layer in hidden), *(a["modulator"][layer][-1] for layer in hidden)))
    for ax, layer in zip(axes, [hidden[-1], hidden[0]]):
        ax.axhline(90, color="0.6", linestyle=":")
        ax.set_title(f"{layer}: angle between W$^T$ and the feedback matrix")
        ax.set_xlabel("training steps")
    axes[0].set_ylabel("angle (degrees)")
    axes[0].set_ylim(-5, 100)
    axes[0].legend(fontsize="small")
    plt.show()

    print("angles at the end of training, degrees (nan: not defined for this variant)")
    print(f"{'variant':10s}" + "".join(f"{'W-B ' + l:>9s}" for l in hidden) + "".join(f"{'d-d ' + l:>9s}" for l in hidden))
    for variant, *values in rows:
        print(f"{variant:10s}" + "".join(f"{v:9.1f}" for v in values))
    """),
    md(r"""
    ## Questions and exercises

    1. **Shallow learning fails.** With only the output layer learning, the error stays
       near chance, although the output layer sees 300 hidden neurons. Why? Measure how much
       the spike probability $\sigma(V)$ of a top hidden neuron depends on the image in a
       fresh network (Lab 1: what does a weight of $\pm 0.05$ do to $V$?), and remember
       that each hidden spike is a coin flip. Hint, a fresh network shown 50 test images for
       20 steps each:

       ```python
       from spikefa.data import load_subset
       from spikefa.network import init_network, input_probabilities

       net = init_network(spikefa.load_config(MODEL))      # fresh, untrained weights
       images, labels = load_subset("test")                  # uint8 pixels; input_probabilities scales them
       images, labels = images[:50], labels[:50]
       k = 20                                                # steps per image
       step_image = np.repeat(np.arange(len(images)), k)
       uniforms = np.random.default_rng(0).random((step_image.size, net.n_units))  # float64, one per unit and step
       top = net.layer_slice(net.m - 1)                      # units are numbered layer after layer; this is h3
       out = net.run(uniforms, input_probabilities(images, net.config.model.p_max), step_image,
                     labels[step_image], plastic=False, rec_idx=np.arange(top.start, top.stop))
       p = 1 / (1 + np.exp(-out["psp"]))                     # sigma(V), shape (steps, neurons of h3)
       p = p.reshape(len(images), k, -1)[:, 5:].mean(axis=1) # per image, once V has settled
       print("sigma(V) across neurons: from", p.mean(axis=0).min(), "to", p.mean(axis=0).max())
       print("across images, for one neuron: std", p.std(axis=0).mean())
       ```
    2. **Is weight transport best?** Compare `transport` with `fa`. The spiking network's
       feedback neurons integrate with $\tau$ and pass on $\tanh(U)$ without a derivative
       factor, so `transport` is not exact backprop. Does it beat FA here? Would you
       expect the answer to depend on $\eta$ (`model={"eta": ...}`)? Try it.
    3. **Chance or not?** Run two more seeds of two variants and decide which differences
       in the bar chart are larger than the seed-to-seed spread. After the loop above `cfg`
       is the last variant's (`learned`), so build each variant's config again, e.g.
       `cfg = spikefa.load_config(MODEL).replace(model={"feedback": "fa"}, train={"epochs": EPOCHS})`,
       then `train(cfg, seed=2, out=OUT_DIR / "fa-seed2.h5", progress=False, overwrite=True).test_error`
       (about 10 s each).
    4. **Learning the feedback.** In the right panel of the alignment figure (`h1`),
       compare `learned` with `fa`. Does node perturbation make $B$ align faster than
       feedback alignment alone does? Is the answer the same early in training (up to about
       10,000 steps) and at the end? And in `h3` (left panel)? What could make a $B$ that
       learns drift away from $W^T$ again?
    """),
    md(r"""
    ## For the teacher: what we measured

    At the default size (`small`, 3 epochs, seed 1 unless said), for comparing with what
    the students find:

    - Exercise 1: `shallow` stays at chance (92.4%): a real effect, not bad luck.
    - Exercise 2: `transport` doing worse than `fa` is *not* a general result; it depends on
      the learning rate. With `model={"eta": 0.01}` instead of the preset's 0.005 we
      measured 19.0% for `fa` and 20.2% for `transport`.
    - Exercise 3: the spread from seed to seed is large this early: over three seeds we
      measured `transport` between 29% and 45%, and `fa` between 23% and 27%.
    """),
]


# ---------------------------------------------------------------------------------------
# Lab 5: cross-checking with Brian2
# ---------------------------------------------------------------------------------------
LAB5 = [
    md(r"""
    # Lab 5 — Cross-checking with Brian2

    How do you know a simulator computes what its equations say? One way: build the same
    model in a different, widely used simulator and compare. spikefa can export any of its
    networks to [Brian2](https://brian2.readthedocs.io): one `NeuronGroup` per forward and
    per feedback population, `Synapses` for every projection, and every phase of a time
    step as Brian2 code in its own slot of the schedule.

    Given the **same random numbers**, both must take the same decision for every neuron
    at every step (a spike is `u < p` in both), so the spike rasters must agree exactly.
    With **independent** random numbers only the statistics can agree.

    **Running time:** about half a minute with the defaults (`small`, `STEPS = 200`);
    Brian2 (numpy target) is much slower per step than spikefa's compiled kernel.
    """),
    md(r"""
    ## The equations

    Those of Lab 3, in the same order within a step: input spikes, forward sweep
    bottom-up, error neurons, feedback sweep top-down, plasticity. In Brian2 the order is
    enforced by schedule slots (`input`, `forward`, `error`, `feedback`, `plasticity`), and
    the forward drive $W^l s^{l-1}$ is a *summed variable* evaluated right before layer
    $l$'s update, so a spike crosses all layers within one step, as in spikefa.

    Brian2 computes in float64, so we run spikefa in float64 too (`model.dtype`).
    """),
    code("""
    import os

    MODEL = "small"  # 784-300-300-300-100
    STEPS = 200      # steps with plasticity on; Brian2 takes tens of ms per step of the small net

    if os.environ.get("SPIKEFA_QUICK"):  # the automated test runs a small version
        MODEL, STEPS = "tiny", 30
    """),
    code("""
    import tempfile
    import time
    from pathlib import Path

    import brian2
    import matplotlib.pyplot as plt
    import numpy as np

    import spikefa
    from spikefa import export
    from spikefa.network import init_network, input_probabilities

    print("spikefa", spikefa.__version__, "| Brian2", brian2.__version__)
    OUT_DIR = Path(tempfile.mkdtemp(prefix="spikefa-lab5-"))  # for the files of the exercises
    print("files of the exercises go to", OUT_DIR)
    """),
    md(r"""
    ## One network, two simulators, the same random numbers

    `export.stimulus` picks images of the bundled MNIST subset in the order training would
    show them. The uniforms have one row per step and one column per neuron.
    `export.to_brian2` builds a `brian2.Network` from the spikefa network's current weights
    and state (the spikefa network is not changed); `run_steps(n)` advances it.
    """),
    code("""
    cfg = spikefa.load_config(MODEL).replace(model={"dtype": "float64"})
    net = init_network(cfg)
    k = cfg.train.steps_per_image
    images, labels = export.stimulus(cfg, n_images=-(-STEPS // k))
    uniforms = np.random.default_rng(7).random((STEPS, net.n_units))

    bnet = export.to_brian2(net, images, labels, uniforms=uniforms, record_traces=True)
    print("NeuronGroups:", ", ".join(sorted(o.name for o in bnet.objects if isinstance(o, brian2.NeuronGroup))))
    print("Synapses:    ", ", ".join(sorted(o.name for o in bnet.objects if isinstance(o, brian2.Synapses))))

    tic = time.perf_counter()
    bnet.run_steps(STEPS)
    t_brian2 = time.perf_counter() - tic

    step_image = np.arange(STEPS) // k
    # compile spikefa's kernel first, on a copy, so that the timing is of the steps alone
    warm = init_network(cfg)
    warm.run(uniforms[:2], input_probabilities(images, cfg.model.p_max), step_image[:2], labels[step_image[:2]],
             plastic=True, rec_idx=np.arange(net.n_units))
    tic = time.perf_counter()
    out = net.run(uniforms, input_probabilities(images, cfg.model.p_max), step_image, labels[step_image],
                  plastic=True, rec_idx=np.arange(net.n_units))
    t_spikefa = time.perf_counter() - tic
    spikes_sf = out["spikes"].copy()
    psp_sf = out["psp"].copy()
    print(f"{STEPS} steps: Brian2 {t_brian2:.1f} s, spikefa {t_spikefa:.2f} s (its kernel compiled beforehand)")
    """),
    md(r"""
    ## Compare the rasters

    For every population: how many (step, neuron) pairs differ, and the largest PSP
    difference. Then the rasters of the first hidden layer and of the output layer side by
    side.
    """),
    code("""
    print(f"{'population':10s} {'neurons':>8s} {'spikes':>8s} {'differ':>7s} {'max |V diff|':>13s}")
    for l, name in enumerate(net.names):
        sl = net.layer_slice(l)
        raster_b2 = export.spike_raster(bnet, name)
        differ = int(np.sum(raster_b2 != spikes_sf[:, sl]))
        vdiff = "" if l == 0 else f"{np.abs(np.asarray(bnet[f'trace_{name}'].psp[:]).T - psp_sf[:, sl]).max():13.1e}"
        print(f"{name:10s} {sl.stop - sl.start:8d} {int(spikes_sf[:, sl].sum()):8d} {differ:7d} {vdiff}")

    state = export.network_state(bnet)
    for l in range(1, net.m + 1):
        name = net.names[l]
        print(f"weights into {name}: largest difference {np.abs(state[f'W_{name}'] - net.weights(l)).max():.1e}")
    """),
    code("""
    show = min(STEPS, 100)
    fig, axes = plt.subplots(2, 2, figsize=(12, 6), sharex=True)
    for row, name in enumerate([net.names[1], net.names[-1]]):
        sl = net.layer_slice(net.names.index(name))
        for col, (label, raster) in enumerate([("spikefa", spikes_sf[:show, sl]),
                                               ("Brian2", export.spike_raster(bnet, name, 0, show))]):
            t, i = np.nonzero(raster)
            axes[row, col].plot(t, i, "|", markersize=2, color="k" if col == 0 else "tab:blue")
            axes[row, col].set_title(f"{label}: {name}")
        axes[row, 0].set_ylabel("neuron")
    for ax in axes[1]:
        ax.set_xlabel("step")
    plt.show()
    """),
    md(r"""
    ## The package's check

    `spikefa validate MODEL` (or `spikefa.validate.cross_validate`) does all of the above
    and more: it compares every population's spikes, PSPs $V$ and $U$, and all weights
    against tolerances scaled by the machine precision, and reports the first step where
    anything differs.
    """),
    code("""
    from spikefa.validate import cross_validate

    report = cross_validate(MODEL, steps=STEPS, check_every=max(10, STEPS // 2))
    print(report)
    """),
    md(r"""
    ## Independent random numbers

    Without shared uniforms Brian2 draws its own (`rand()`). The rasters now differ spike
    by spike; the firing rates of each population should agree within their statistical
    spread.
    """),
    code("""
    net2 = init_network(cfg)
    brian2.seed(3)
    bnet2 = export.to_brian2(net2, images, labels)
    bnet2.run_steps(STEPS)
    for l, name in enumerate(net.names):
        sl = net.layer_slice(l)
        r_sf = spikes_sf[:, sl].mean()
        r_b2 = export.spike_raster(bnet2, name).mean()
        print(f"{name:4s} firing rate: spikefa {r_sf:.3f}, Brian2 (own noise) {r_b2:.3f}")
    """),
    md(r"""
    ## Questions and exercises

    1. **float32.** Run spikefa in float32 against Brian2's float64 with the same uniforms:
       `print(cross_validate(MODEL, steps=STEPS, dtype="float32"))`. The PSPs now differ by
       about $10^{-6}$ (column `max|dV|`), yet the rasters most likely still agree spike for
       spike. Why? A spike is `u < p`: it flips only when the uniform `u` falls between the
       float32 and the float64 spike probability, a gap of about $10^{-6}$ or less. Estimate
       how many steps you would expect to run before the first flip (how many spike
       decisions does the network take per step?), and try a longer run if you have time
       (Brian2 needs 10 ms or more per step of this network).
    2. **A deliberate bug.** Build `bnet` again, set `bnet["h1"].bias = 0.01` before
       running (this sets the bias of *every* neuron of `h1` to 0.01), and find the step at
       which the first spike differs. Why does a tiny change of one layer's biases change
       spikes in the layers above it, but not in the input?
    3. **Read the model.** In a cell, run
       `!spikefa export-brian2 small -o {OUT_DIR}/small_brian2.py --noise-steps 100`:
       it writes a standalone Brian2 script (and its arrays, `small_brian2.npz`) into this
       lab's temporary folder. Open it and find the five phases of a step. How would you
       change $\phi_d$ from $\tanh$ to $2\sigma - 1$ there?
    4. **Speed.** Why might Brian2 be slower here than spikefa? (Hint: look for "summed
       variables" in the export documentation, `spikefa.export.__doc__`.)
    """),
]


LABS = {
    "01-one-neuron.ipynb": LAB1,
    "02-feedback-alignment.ipynb": LAB2,
    "03-spiking-network-learns.ipynb": LAB3,
    "04-which-feedback.ipynb": LAB4,
    "05-brian2-crosscheck.ipynb": LAB5,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    """A notebook without outputs, with stable cell ids (so that regenerating is a no-op)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    stem = name.split("-")[0]
    for i, (kind, text) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"lab{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from this file")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in LABS.items():
        path = HERE / name
        text = render(build(name, cells))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/make_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
