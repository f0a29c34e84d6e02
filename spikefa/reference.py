"""Plain-NumPy twin of :func:`spikefa.kernels.run_block`: the test oracle and the teaching text.

Same arguments, same order of phases, same precision rules (float64 sums and
nonlinearities, one rounding to the working dtype), written with whole-array NumPy
operations so that each line reads like the equation in docs/model.md:

    s0   = u < min(x, p_max)
    V^l  = (1 - tau) V^l + tau (W^l s^{l-1} + b^l)           s^l = u < sigma(V^l)
    U^m  = (1 - tau) U^m + tau (s^m - y*)
    U^l  = (1 - tau) U^l + tau F^l phi_d(U^src)              (top-down)
    m^l  = phi_d(U^l) * sigma'(V^l)
    W^l <- (1 - eta gamma) W^l - eta m^l s^{l-1}^T            (through the float64 scale)

See :mod:`spikefa.kernels` for the storage conventions.
"""

from __future__ import annotations

import numpy as np

f64 = np.float64


def _sigma(v):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-v))


def _phi(u, kind):
    with np.errstate(over="ignore"):
        if kind == 0:
            return np.tanh(u)
        if kind == 1:
            return 2.0 / (1.0 + np.exp(-u)) - 1.0
        return 1.0 / (1.0 + np.exp(-u)) - 0.5


def run_block(
    sizes, offsets,
    W, b, scale, W_mask, use_mask, learn,
    F, fb_src, fb_scale_idx, fb_on, fb_learn, fb_quantum,
    spikes, psp, prob, feedback_psp, phi_fb, fb_drive, modulator, psp_baseline,
    active, n_active, acc, g,
    uniforms, in_prob, step_image, step_label, n_per_class,
    one_minus_tau, tau, eta, decay, eta_fb, baseline_rate, var_floor, phi_kind,
    plastic, feedback,
    rec_idx, spike_buf, trace_psp, trace_fb, trace_mod, nthreads=1,
    pend_spikes=None, pend_g=None, n_pend=None, cnt=None,
    incremental=False, fwd_cache=None, fwd_age=None, prev_spikes=None, changed=None,
):
    """NumPy twin of :func:`spikefa.kernels.run_block` (same signature, same effects).

    ``run.forward_pass = "incremental"`` changes how the kernel sums the forward drive
    (only the rows of units whose spike changed, onto a cached sum), not what it sums: the
    twin always sums the active rows in full, and keeps ``fwd_cache`` and ``fwd_age`` as
    the kernel does, so that the two can be compared value for value (the cached sums
    agree to float64 rounding, the PSPs and spikes to the working dtype's).
    """
    m = len(sizes) - 1
    sl = [slice(offsets[l], offsets[l] + sizes[l]) for l in range(m + 1)]
    dtype = psp.dtype
    K = pend_spikes.shape[0]
    for t in range(uniforms.shape[0]):
        use_inc = incremental and fwd_age[0] < K
        u = uniforms[t]
        spikes[sl[0]] = u[sl[0]] < in_prob[step_image[t]]

        # forward sweep: the rows of W of the units that spiked, summed in float64
        pre_active = []
        for l in range(1, m + 1):
            idx = np.flatnonzero(spikes[sl[l - 1]])
            pre_active.append(idx)
            drive = W[l - 1][idx].sum(axis=0, dtype=f64) if idx.size else np.zeros(sizes[l])
            if incremental:
                fwd_cache[sl[l]] = drive
            if learn[l - 1]:  # pending (deferred) updates, folded in exactly
                for q in range(n_pend[0]):
                    c_q = f64(pend_spikes[q, sl[l - 1]][idx].sum())
                    if c_q != 0.0:
                        drive = drive - c_q * pend_g[l - 1, q, :sizes[l]].astype(f64)
            x = scale[l - 1] * (drive + b[l - 1])
            psp[sl[l]] = one_minus_tau * psp[sl[l]].astype(f64) + tau * x
            prob[sl[l]] = _sigma(psp[sl[l]].astype(f64))
            spikes[sl[l]] = u[sl[l]] < prob[sl[l]]
        fwd_age[0] = (fwd_age[0] + 1 if use_inc else 1) if incremental else K

        if feedback or plastic:
            target = (np.arange(sizes[m]) // n_per_class == step_label[t]).astype(f64)
            err = spikes[sl[m]] - target
            feedback_psp[sl[m]] = one_minus_tau * feedback_psp[sl[m]].astype(f64) + tau * err
            phi_fb[sl[m]] = _phi(feedback_psp[sl[m]].astype(f64), phi_kind)
            for l in range(m - 1, 0, -1):
                if not fb_on[l - 1]:
                    continue
                si = fb_scale_idx[l - 1]
                sc = (1.0 if si < 0 else scale[si]) * fb_quantum[l - 1]
                d = sc * (F[l - 1].astype(f64, copy=False) @ phi_fb[sl[fb_src[l - 1]]])
                fb_drive[sl[l]] = d
                feedback_psp[sl[l]] = one_minus_tau * feedback_psp[sl[l]].astype(f64) + tau * d
                phi_fb[sl[l]] = _phi(feedback_psp[sl[l]].astype(f64), phi_kind)

        if plastic:
            for l in range(1, m + 1):
                if not learn[l - 1]:
                    continue
                c_new = scale[l - 1] * (1.0 - decay)
                p = prob[sl[l]]
                mod = phi_fb[sl[l]] * (p * (1.0 - p))
                modulator[sl[l]] = mod
                gl = (eta / c_new * mod).astype(dtype)
                idx = pre_active[l - 1]
                if K > 1:
                    pend_g[l - 1, n_pend[0], :sizes[l]] = gl
                elif use_mask[l - 1]:
                    W[l - 1][idx] -= gl * W_mask[l - 1][idx]
                else:
                    W[l - 1][idx] -= gl
                b[l - 1][...] -= gl
                scale[l - 1] = c_new

            if K > 1:
                pend_spikes[n_pend[0]] = spikes
                n_pend[0] += 1
                if n_pend[0] == K:
                    for l in range(1, m + 1):
                        if learn[l - 1]:
                            for q in range(K):
                                rows = np.flatnonzero(pend_spikes[q, sl[l - 1]])
                                W[l - 1][rows] -= pend_g[l - 1, q, :sizes[l]]
                    n_pend[0] = 0
                    fwd_age[0] = K

            if any(fb_learn):
                for l in range(1, m):
                    if not fb_learn[l - 1]:
                        continue
                    src = sl[fb_src[l - 1]]
                    e = phi_fb[src]
                    reward = 0.0
                    dV = psp[src].astype(f64) - psp_baseline[src]
                    for j in range(e.shape[0]):  # in order, as the kernel sums
                        reward += e[j] * dV[j]
                    reward /= tau
                    p = prob[sl[l]]
                    var = np.maximum(p * (1.0 - p), var_floor)
                    estimate = reward * (spikes[sl[l]] - p) / var
                    coef = eta_fb * (fb_drive[sl[l]] - estimate)
                    Fl = F[l - 1]
                    Fl[...] = Fl - np.outer(coef, e)
                psp_baseline += baseline_rate * (psp.astype(f64) - psp_baseline)

        spike_buf[t] = spikes
        if rec_idx.size:
            trace_psp[t] = psp[rec_idx]
            trace_fb[t] = feedback_psp[rec_idx]
            trace_mod[t] = modulator[rec_idx]
