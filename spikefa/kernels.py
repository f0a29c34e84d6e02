"""Numba kernels: one block of time steps of the spiking network.

The equations are those of Lillicrap, Cownden, Tweed & Akerman (2016), Methods, "A deep
network that integrates its activity and spikes", as restated in docs/model.md. For every step
``t`` of the block, in this order:

1. input spikes      ``s0_i = u_i < min(x_i, p_max)``
2. forward sweep     ``V^l = (1-tau) V^l + tau (W^l s^{l-1} + b^l)``,  ``s^l_j = u_j < sigma(V^l_j)``
3. error neurons     ``U^m = (1-tau) U^m + tau (s^m - y*)``
4. feedback sweep    ``U^l = (1-tau) U^l + tau F^l phi_d(U^src)``  (l = m-1 .. 1)
5. plasticity        ``m^l = phi_d(U^l) sigma'(V^l)``;
                     ``W^l <- (1 - eta gamma) W^l - eta m^l s^{l-1}^T``, same for ``b^l``;
                     optionally the feedback matrix learns (node perturbation, ``learned``).

Storage conventions (shared with :mod:`spikefa.reference`, the NumPy twin):

- Every population lives in one flat array (``spikes``, ``psp``, ...) of length
  ``sum(sizes)``; layer ``l`` occupies ``offsets[l] : offsets[l] + sizes[l]`` (layer 0 is
  the input, whose PSP slots are unused).
- ``W[l-1]`` has shape ``(n_{l-1}, n_l)``: row ``i`` holds the synapses *from* presynaptic
  unit ``i``, so the event-driven forward pass adds one contiguous row per spike and the
  plasticity update rewrites only the rows of units that spiked.
- Weight decay is exact and free: the effective weights are ``scale[l-1] * W[l-1]`` (and
  ``scale * b``) with a float64 ``scale`` that is multiplied by ``1 - eta*gamma`` each step.
  In float32, ``W - eta*gamma*W`` is a no-op (``float32(1 - 1e-11) == 1``) that would still
  cost a pass over all weights.
- ``F[k]`` (feedback into hidden layer ``k+1``) has shape ``(n_{k+1}, n_src)``; for the
  weight-transport control it *is* ``W[k+1]`` (same layout), scaled by ``scale[k+1]``.
- Sums over synapses accumulate in float64 and are rounded once to the working dtype, so
  the kernel and its twin agree bit for bit whatever their summation order, except for a
  rounding tie (probability ~1e-9 per value in float32). Spike probabilities and
  ``phi_d`` are evaluated in float64 for the same reason. With ``run.forward_pass =
  "incremental"`` the kernel's drive is a cached sum updated over up to ``K`` steps, which
  carries the float64 rounding of those additions (the twin sums in full); the tests
  allow 64 eps of the dtype, and measured none in float32.

Random numbers are an input (``uniforms``, one row per step); kernels never allocate in
the step loop and read no globals.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

PHI_CODES = {"tanh": 0, "2sigma-1": 1, "sigma-0.5": 2}


@njit(cache=True, inline="always")
def _sigma(v):
    return 1.0 / (1.0 + np.exp(-v))


@njit(cache=True, inline="always")
def _phi(u, kind):
    if kind == 0:
        return np.tanh(u)
    elif kind == 1:
        return 2.0 / (1.0 + np.exp(-u)) - 1.0
    return 1.0 / (1.0 + np.exp(-u)) - 0.5


# Hot loops index contiguous views from 0: an index like ``x[o + k]`` with a runtime
# offset makes Numba emit a negative-index wraparound check that stops vectorisation
# (measured: 4x slower).
@njit(cache=True)
def _add_rows(Wl, rows, k, acc, j0, j1):
    """``acc[j0:j1] = sum over a < k of Wl[rows[a], j0:j1]``, row after row, in float64.

    Four rows per pass over ``acc`` quarter the accumulator traffic; the additions still
    happen one row after the other, so the sum equals the row-by-row sum bit for bit.
    """
    n = j1 - j0
    out = acc[j0:j1]
    for j in range(n):
        out[j] = 0.0
    a = 0
    while a + 4 <= k:
        r0 = Wl[rows[a], j0:j1]
        r1 = Wl[rows[a + 1], j0:j1]
        r2 = Wl[rows[a + 2], j0:j1]
        r3 = Wl[rows[a + 3], j0:j1]
        for j in range(n):
            out[j] = (((out[j] + r0[j]) + r1[j]) + r2[j]) + r3[j]
        a += 4
    while a < k:
        r = Wl[rows[a], j0:j1]
        for j in range(n):
            out[j] += r[j]
        a += 1


@njit(cache=True)
def _add_rows_signed(Wl, rows, now, k, acc, j0, j1):
    """``acc[j0:j1] = sum over a < k of +-Wl[rows[a], j0:j1]``: ``+`` for a unit that spikes
    ``now`` (it started), ``-`` for one that does not (it stopped); row after row in float64
    like ``_add_rows``. A product with +-1 is exact, so this is the same arithmetic as
    adding and subtracting.
    A twin of ``_add_rows`` rather than ``_add_rows`` with all-ones signs, so that the full
    pass (the default) keeps its loop without the multiplications."""
    n = j1 - j0
    out = acc[j0:j1]
    for j in range(n):
        out[j] = 0.0
    a = 0
    while a + 4 <= k:
        r0 = Wl[rows[a], j0:j1]
        r1 = Wl[rows[a + 1], j0:j1]
        r2 = Wl[rows[a + 2], j0:j1]
        r3 = Wl[rows[a + 3], j0:j1]
        s0 = 2.0 * now[rows[a]] - 1.0
        s1 = 2.0 * now[rows[a + 1]] - 1.0
        s2 = 2.0 * now[rows[a + 2]] - 1.0
        s3 = 2.0 * now[rows[a + 3]] - 1.0
        for j in range(n):
            out[j] = (((out[j] + s0 * r0[j]) + s1 * r1[j]) + s2 * r2[j]) + s3 * r3[j]
        a += 4
    while a < k:
        r = Wl[rows[a], j0:j1]
        s0 = 2.0 * now[rows[a]] - 1.0
        for j in range(n):
            out[j] += s0 * r[j]
        a += 1


@njit(cache=True)
def _copy_to(out, x):
    for j in range(out.shape[0]):
        out[j] = x[j]


@njit(cache=True)
def _sub_row(row, g):
    for j in range(row.shape[0]):
        row[j] -= g[j]


@njit(cache=True)
def _sub_row_masked(row, mask, g):
    for j in range(row.shape[0]):
        if mask[j]:
            row[j] -= g[j]


@njit(cache=True)
def _add_to(out, x):
    for j in range(out.shape[0]):
        out[j] += x[j]


@njit(cache=True)
def _sub_scaled(out, c, g):
    """``out -= c * g`` in float64 (``c`` an exact count, ``g`` one pending update)."""
    for j in range(out.shape[0]):
        out[j] -= c * g[j]


# reassoc lets LLVM vectorise the reduction and contract fuse each product into it (an
# FMA: measured 12% faster on float32 rows, 14% on int8); the float64 accumulator keeps
# the result within an ulp of any other summation order before it is rounded.
@njit(cache=True, fastmath={"reassoc", "nsz", "contract"})
def _row_dot(row, x):
    acc = 0.0
    for k in range(x.shape[0]):
        acc += row[k] * x[k]
    return acc


@njit(cache=True)
def _row_axpy(row, coef, x):
    """``row -= coef * x`` computed in float64, rounded once to the row's dtype."""
    for k in range(x.shape[0]):
        row[k] = row[k] - coef * x[k]


def _run_block(
    sizes, offsets,
    W, b, scale, W_mask, use_mask, learn,
    F, fb_src, fb_scale_idx, fb_on, fb_learn, fb_quantum,
    spikes, psp, prob, feedback_psp, phi_fb, fb_drive, modulator, psp_baseline,
    active, n_active, acc, g,
    uniforms, in_prob, step_image, step_label, n_per_class,
    one_minus_tau, tau, eta, decay, eta_fb, baseline_rate, var_floor, phi_kind,
    plastic, feedback,
    rec_idx, spike_buf, trace_psp, trace_fb, trace_mod, nthreads,
    pend_spikes, pend_g, n_pend, cnt,
    incremental, fwd_cache, fwd_age, prev_spikes, changed,
):
    """Advance the network ``uniforms.shape[0]`` steps in place.

    Parameters
    ----------
    sizes, offsets : int64 arrays (m+1,)
        Layer sizes (input first) and their offsets into the flat state arrays.
    W, b : tuples of m arrays
        Raw forward weights ``(n_{l-1}, n_l)`` and biases; effective = ``scale * raw``.
    scale : float64 (m,)
        Per-layer decay scale (updated in place).
    W_mask, use_mask : tuple of m uint8 arrays, bool (m,)
        Synapses removed for good (sparse FA) stay zero where ``use_mask``.
    learn : bool (m,)
        Which forward layers are plastic.
    F, fb_src, fb_scale_idx, fb_on, fb_learn, fb_quantum : per hidden layer (m-1 entries)
        Feedback matrix, source layer, index of the scale that multiplies it (-1: none),
        whether the feedback population is driven, whether ``F`` learns, and the float64
        value of one stored unit of ``F`` (1.0, or ``feedback_init / 127`` for int8).
    spikes : uint8 (N,)
        Spikes of all layers at the last step (input included).
    psp, prob, feedback_psp, phi_fb, fb_drive, modulator : (N,)
        ``V``, ``sigma(V)`` (float64), ``U``, ``phi_d(U)`` (float64), ``F phi_d(U^src)``
        (float64) and the modulator ``m`` of every neuron.
    psp_baseline : float64 (N,)
        Running mean of every PSP ``V`` (node perturbation only).
    active, n_active, acc, g : workspaces
        Indices of spiking presynaptic units per layer (int64 (N,)), their counts (m,),
        float64 accumulators ``(P, max(sizes))`` (one per share of the forward sweep's
        active rows: at most ``P`` shares) and a dtype buffer of length ``max(sizes)``.
    uniforms : float64 (T, N)
        One uniform draw in [0, 1) per unit and step.
    in_prob, step_image, step_label : (n_img, n_0) float64, (T,), (T,)
        Spike probability of each input pixel of the images shown in this block
        (already ``min(x, p_max)``), which of them is shown at each step, and its class.
    n_per_class : int
        Output units per class: the target ``y*`` is 1 on units ``n_per_class * c ...``
        of class ``c``.
    one_minus_tau, tau : float64
        The PSP update ``V <- (1 - tau) V + tau drive`` (the same for ``U``).
    eta, decay : float64
        Learning rate and ``eta * gamma``, the per-step weight decay folded into ``scale``.
    eta_fb, baseline_rate, var_floor : float64
        ``learned`` feedback only: the learning rate of ``F``, the rate of the running mean
        ``psp_baseline``, and the floor on ``p (1 - p)`` in the node-perturbation estimate.
    phi_kind : int
        ``phi_d``, coded as in :data:`PHI_CODES` (tanh, 2 sigma - 1, sigma - 0.5).
    plastic, feedback : bool
        Training (plasticity on) or testing; whether to run the feedback sweep at all.
    rec_idx : int64 (R,)
        Flat indices of neurons whose ``V``, ``U`` and ``m`` are traced every step.
    spike_buf : uint8 (T, N)
        Receives the spikes of every unit at every step.
    trace_psp, trace_fb, trace_mod : (T, R)
        Receive the traces.
    pend_spikes, pend_g, n_pend, cnt : (K, N) uint8, (m, K, max n) dtype, int64 (1,), float64 (K,)
        Deferred updates (``K > 1``): the spikes and update vectors of the last ``n_pend``
        steps, not yet written into ``W``. The forward pass folds them in exactly
        (``W s = W_base s - sum_q (s_q . s) g_q``), and every ``K`` plastic steps they are
        applied to the rows that spiked, oldest first: ``W`` is written once per ``K`` steps.
        ``K = 1`` applies every update at once.
    incremental, fwd_cache, fwd_age : bool, float64 (N,), int64 (1,)
        ``run.forward_pass = "incremental"``: ``fwd_cache`` holds, for every non-input unit,
        the float64 sum of the raw rows of ``W`` of the presynaptic units that spiked at the
        last step (``W_base s(t-1)``, pending updates not included), and ``fwd_age`` the
        steps since it was last summed in full. A step then adds the rows of the units that
        started spiking and subtracts those of the units that stopped, where those are fewer
        than the active rows (late in training 20-30% as many: units near saturation rarely
        change state). A full sum is taken whenever ``fwd_age`` reaches ``K`` (every ``K``
        steps in testing) and on the step after each flush of the deferred updates (``W``
        changed), so the cached sums carry the rounding of at most ``K`` steps of float64
        additions. ``fwd_age >= K`` means "no valid cache"; with ``K = 1`` every pass is full.
    prev_spikes, changed : uint8 (N,), int64 (N,)
        Workspaces: the spikes at the start of the block (later steps compare with the
        row of ``spike_buf`` before theirs) and the units whose spike changed.
    nthreads : int
        Number of column chunks of the forward sweep (Numba's thread count, 1 for the
        serial kernel; passed in because ``numba.get_num_threads`` would stop the compiled
        kernel from being cached). It never changes the results.
    """
    m = sizes.shape[0] - 1
    n_steps = uniforms.shape[0]
    K = pend_spikes.shape[0]
    N = spikes.shape[0]
    if incremental:
        _copy_to(prev_spikes, spikes)
    for t in range(n_steps):
        # 1. input spikes
        img = step_image[t]
        n0 = sizes[0]
        for i in range(n0):
            spikes[i] = 1 if uniforms[t, i] < in_prob[img, i] else 0

        # 2. forward sweep, bottom-up
        use_inc = incremental and fwd_age[0] < K
        for l in range(1, m + 1):
            Wl = W[l - 1]
            bl = b[l - 1]
            c = scale[l - 1]
            n_pre = sizes[l - 1]
            n_post = sizes[l]
            o_pre = offsets[l - 1]
            o = offsets[l]
            k = 0
            for i in range(n_pre):
                if spikes[o_pre + i]:
                    active[o_pre + k] = i
                    k += 1
            n_active[l - 1] = k
            npd = n_pend[0] if learn[l - 1] else 0
            sp_pre = spikes[o_pre:o_pre + n_pre]
            for q in range(npd):
                # how many of this step's active units spiked at pending step q (a
                # contiguous byte dot product, not a gather through ``active``)
                pq = pend_spikes[q, o_pre:o_pre + n_pre]
                c_q = 0
                for i in range(n_pre):
                    c_q += pq[i] & sp_pre[i]
                cnt[q] = c_q
            # incremental: the units whose spike changed since the last step, if fewer
            inc_l = False
            kc = 0
            if use_inc:
                last = prev_spikes if t == 0 else spike_buf[t - 1]
                pv = last[o_pre:o_pre + n_pre]
                for i in range(n_pre):
                    if sp_pre[i] != pv[i]:
                        changed[o_pre + kc] = i
                        kc += 1
                inc_l = kc < k
            n_rows = kc if inc_l else k
            # The rows are summed in shares of at least 32 rows, each whole rows into its
            # own float64 accumulator (long contiguous reads the prefetcher follows; 2.3x
            # faster than splitting the columns, measured in isolation), and the shares
            # are added once after. How many shares depends on the number of rows and on
            # the workspace only, not on the number of threads, so every thread count
            # (and the serial kernel) adds in the same order and gives the same bits.
            n_parts = min(acc.shape[0], max(1, n_rows // 32))
            share = (((n_rows + n_parts - 1) // n_parts) + 3) // 4 * 4
            for th in prange(n_parts):
                a0 = min(th * share, n_rows)
                a1 = min(a0 + share, n_rows)
                if inc_l:
                    _add_rows_signed(Wl, changed[o_pre + a0:o_pre + a1], sp_pre, a1 - a0, acc[th], 0, n_post)
                else:
                    _add_rows(Wl, active[o_pre + a0:o_pre + a1], a1 - a0, acc[th], 0, n_post)
            width = (n_post + nthreads - 1) // nthreads
            width = ((width + 15) // 16) * 16
            n_chunks = (n_post + width - 1) // width
            for ch in prange(n_chunks):
                j0 = ch * width
                j1 = min(j0 + width, n_post)
                total = acc[0, j0:j1]
                for th in range(1, n_parts):
                    _add_to(total, acc[th, j0:j1])
                if inc_l:
                    _add_to(total, fwd_cache[o + j0:o + j1])
                if incremental:
                    _copy_to(fwd_cache[o + j0:o + j1], total)
                for q in range(npd):
                    if cnt[q] != 0.0:
                        _sub_scaled(total, cnt[q], pend_g[l - 1, q, j0:j1])
                bj = bl[j0:j1]
                vj = psp[o + j0:o + j1]
                pj = prob[o + j0:o + j1]
                sj = spikes[o + j0:o + j1]
                uj = uniforms[t, o + j0:o + j1]
                for j in range(j1 - j0):
                    x = c * (total[j] + bj[j])
                    vj[j] = one_minus_tau * vj[j] + tau * x
                    p = _sigma(np.float64(vj[j]))
                    pj[j] = p
                    sj[j] = 1 if uj[j] < p else 0
        # a full pass keeps no cache: its state never claims a valid one
        fwd_age[0] = (fwd_age[0] + 1 if use_inc else 1) if incremental else K

        if feedback or plastic:
            # 3. error neurons: output minus target
            o = offsets[m]
            label = step_label[t]
            for j in range(sizes[m]):
                target = 1.0 if j // n_per_class == label else 0.0
                feedback_psp[o + j] = one_minus_tau * feedback_psp[o + j] + tau * (spikes[o + j] - target)
                phi_fb[o + j] = _phi(np.float64(feedback_psp[o + j]), phi_kind)

            # 4. feedback sweep, top-down
            for l in range(m - 1, 0, -1):
                if not fb_on[l - 1]:
                    continue
                Fl = F[l - 1]
                src = fb_src[l - 1]
                o_src = offsets[src]
                n_src = sizes[src]
                si = fb_scale_idx[l - 1]
                sc = (1.0 if si < 0 else scale[si]) * fb_quantum[l - 1]
                o = offsets[l]
                x = phi_fb[o_src:o_src + n_src]
                for i in prange(sizes[l]):
                    d = sc * _row_dot(Fl[i], x)
                    fb_drive[o + i] = d
                    feedback_psp[o + i] = one_minus_tau * feedback_psp[o + i] + tau * d
                    phi_fb[o + i] = _phi(np.float64(feedback_psp[o + i]), phi_kind)

        if plastic:
            # 5. three-factor plasticity with the values of this step
            for l in range(1, m + 1):
                if not learn[l - 1]:
                    continue
                Wl = W[l - 1]
                bl = b[l - 1]
                n_post = sizes[l]
                o = offsets[l]
                o_pre = offsets[l - 1]
                c_new = scale[l - 1] * (1.0 - decay)
                coef = eta / c_new
                for j in range(n_post):
                    p = prob[o + j]
                    mj = phi_fb[o + j] * (p * (1.0 - p))
                    modulator[o + j] = mj
                    g[j] = coef * mj
                k = n_active[l - 1]
                if K > 1:
                    # deferred: keep the update as a factor, fold it in every K steps
                    pend_g[l - 1, n_pend[0], :n_post] = g[:n_post]
                elif use_mask[l - 1]:
                    Ml = W_mask[l - 1]
                    for a in prange(k):
                        row = active[o_pre + a]
                        _sub_row_masked(Wl[row], Ml[row], g[:n_post])
                else:
                    for a in prange(k):
                        _sub_row(Wl[active[o_pre + a]], g[:n_post])
                for j in range(n_post):
                    bl[j] -= g[j]
                scale[l - 1] = c_new

            if K > 1:
                pend_spikes[n_pend[0], :] = spikes
                n_pend[0] += 1
                if n_pend[0] == K:
                    # apply the K pending updates to the rows that spiked, oldest first,
                    # each rounded to the dtype exactly as an immediate update would be
                    for l in range(1, m + 1):
                        if not learn[l - 1]:
                            continue
                        Wl = W[l - 1]
                        o_pre = offsets[l - 1]
                        n_post = sizes[l]
                        for i in prange(sizes[l - 1]):
                            for q in range(K):
                                if pend_spikes[q, o_pre + i]:
                                    _sub_row(Wl[i], pend_g[l - 1, q, :n_post])
                    n_pend[0] = 0
                    fwd_age[0] = K  # W changed: the next forward pass sums in full

            # 5b. feedback learned by node perturbation (Lansdell et al. 2020; see feedback.py)
            any_fb_learn = False
            for l in range(1, m):
                if fb_learn[l - 1]:
                    any_fb_learn = True
            if any_fb_learn:
                for l in range(1, m):
                    if not fb_learn[l - 1]:
                        continue
                    Fl = F[l - 1]
                    src = fb_src[l - 1]
                    o_src = offsets[src]
                    n_src = sizes[src]
                    o = offsets[l]
                    reward = 0.0
                    for j in range(n_src):
                        reward += phi_fb[o_src + j] * (psp[o_src + j] - psp_baseline[o_src + j])
                    reward /= tau
                    x = phi_fb[o_src:o_src + n_src]
                    for i in prange(sizes[l]):
                        p = prob[o + i]
                        var = max(p * (1.0 - p), var_floor)
                        estimate = reward * (spikes[o + i] - p) / var
                        _row_axpy(Fl[i], eta_fb * (fb_drive[o + i] - estimate), x)
                for i in range(spikes.shape[0]):
                    psp_baseline[i] += baseline_rate * (psp[i] - psp_baseline[i])

        # recording: every unit's spikes, chosen neurons' traces
        for i in range(N):
            spike_buf[t, i] = spikes[i]
        for r in range(rec_idx.shape[0]):
            q = rec_idx[r]
            trace_psp[t, r] = psp[q]
            trace_fb[t, r] = feedback_psp[q]
            trace_mod[t, r] = modulator[q]


def _renamed(func, name):
    """A copy of ``func`` under another name. Numba's on-disk cache is keyed by the
    function's qualified name and ignores ``parallel``: two compilations of one function
    would share (and overwrite) one cache entry, and the serial kernel could be loaded
    where the parallel one was asked for."""
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = func.__doc__
    return copy


# One source, two compilations: threads pay off only when a step moves megabytes of
# weights; for small networks the cost of starting a parallel region dominates.
run_block = njit(cache=True, parallel=True)(_renamed(_run_block, "run_block_parallel"))
run_block_serial = njit(cache=True)(_renamed(_run_block, "run_block_serial"))
