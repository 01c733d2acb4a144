#!/usr/bin/env python3
"""PyTorch peer for `vidrt bench`: times torch.matmul, F.scaled_dot_product_attention,
F.conv3d, the RMS norm, layer norm + modulate and the two peaks (a streaming copy, a square
matmul) at the same names and shapes as vidrt's kernel suite, and writes the same JSON schema
(`BenchReport`, schema 1), so `vidrt bench --compare vidrt.json peer.json` prints ratios.

    python3 benches/peers/torch_peer.py --json peer.json [--scale N] [--model M]
        [--warmup W] [--repeats R] [--timing wall|kernel] [--device cuda|cpu]
        [--dtype f32|bf16|f16] [--from vidrt.json] [--dry-run]

Shapes: built in for the presets (wan2.1-t2v-1.3b, wan2.1-t2v-14b, tiny) at the model's
default video size (480x832, 81 frames for Wan), divided by --scale exactly as vidrt does
(DiT tokens divided and rounded up, VAE latent height and width each divided and rounded up,
copy peak divided by scale^2, matmul peak side by scale). `--from vidrt.json` instead takes
every kernel and peak benchmark (name, op, shapes) from a vidrt report, so the names match by
construction.

Timing (median of --repeats after --warmup, fresh inputs every repeat):
- `wall` (the default without `--from`; vidrt's definition on the CPU): inputs start on the host, are copied to the device,
  the op runs, the output is copied back and the device synchronised; pageable host memory.
- `kernel` (the default with `--from` a GPU report of vidrt, whose GPU times are the kernels'
  device time): inputs already on the device; CUDA events around the op only (on CPU, wall
  time of the op).

`--dtype` (default f32, or the dtype of the `--from` report's results) runs every op in that
dtype, as `vidrt bench --precision` does; a 16-bit run's built-in names end in ` bf16`/` f16`
like vidrt's. In f32, TF32 is off (vidrt's f32 kernels do not use it).

`--dry-run` needs no torch: it writes the report with every time set to a placeholder 1.0 ms
(and says so in `tool`), to check the shape list and the JSON writer.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

SCHEMA_VERSION = 1

PRESETS = {
    "wan2.1-t2v-1.3b": dict(heads=12, hd=128, ffn=8960, eps=1e-6, text_len=512, height=480, width=832,
                            frames=81, vae_base=96, z_dim=16, dim_mult=[1, 2, 4, 4],
                            temperal_downsample=[False, True, True], num_res_blocks=2, patch=(1, 2, 2),
                            out_channels=3),
    "wan2.1-t2v-14b": dict(heads=40, hd=128, ffn=13824, eps=1e-6, text_len=512, height=480, width=832,
                           frames=81, vae_base=96, z_dim=16, dim_mult=[1, 2, 4, 4],
                           temperal_downsample=[False, True, True], num_res_blocks=2, patch=(1, 2, 2),
                           out_channels=3),
    "tiny": dict(heads=2, hd=32, ffn=128, eps=1e-6, text_len=512, height=96, width=128, frames=17, vae_base=8,
                 z_dim=16, dim_mult=[1, 2, 4, 4], temperal_downsample=[False, True, True], num_res_blocks=2,
                 patch=(1, 2, 2), out_channels=3),
}
ALIASES = {"1.3b": "wan2.1-t2v-1.3b", "14b": "wan2.1-t2v-14b", "vidrt-tiny": "tiny"}


def ceil_div(a, b):
    return -(-a // b)


def plan(model, scale, dtype="f32"):
    """The kernel suite and peaks: a list of dicts {name, kind, op, shapes, params}."""
    out = plan_f32_names(model, scale)
    if dtype != "f32":
        for c in out:
            c["name"] = f"{c['name']} {dtype}"
    return out


def plan_f32_names(model, scale):
    m = PRESETS[ALIASES.get(model.lower(), model.lower())]
    s = scale
    out = []
    # Peaks.
    n = max((64 << 20) // (s * s), 1 << 20)
    out.append(dict(name=f"peak copy n={n}", kind="peak", op="copy", shapes=[[n]]))
    side = max((8192 // s) // 64 * 64, 256)
    out.append(dict(name=f"peak matmul {side}x{side}x{side}", kind="peak", op="matmul",
                    shapes=[[1, side, side], [side, side]]))
    # DiT.
    sf = 1 << (len(m["dim_mult"]) - 1)
    tf = 1 << sum(1 for t in m["temperal_downsample"] if t)
    lat_f = 1 + (m["frames"] - 1) // tf
    lat_h, lat_w = m["height"] // sf, m["width"] // sf
    p = m["patch"]
    tokens = ceil_div((lat_f // p[0]) * (lat_h // p[1]) * (lat_w // p[2]), s)
    heads, hd, ffn = m["heads"], m["hd"], m["ffn"]
    dim = heads * hd
    for (mm, k, nn) in [(tokens, dim, dim), (tokens, dim, ffn), (tokens, ffn, dim)]:
        out.append(dict(name=f"matmul M={mm} K={k} N={nn}", kind="kernel", op="matmul", shapes=[[1, mm, k], [nn, k]]))
    tl = m["text_len"]
    out.append(dict(name=f"attention H={heads} D={hd} S={tokens}", kind="kernel", op="attention",
                    shapes=[[1, tokens, heads, hd]] * 3))
    out.append(dict(name=f"attention H={heads} D={hd} S={tokens} Sk={tl}", kind="kernel", op="attention",
                    shapes=[[1, tokens, heads, hd], [1, tl, heads, hd], [1, tl, heads, hd]]))
    out.append(dict(name=f"rms_norm S={tokens} D={dim}", kind="kernel", op="rms_norm",
                    shapes=[[1, tokens, dim], [dim]]))
    out.append(dict(name=f"layer_norm+modulate S={tokens} D={dim}", kind="kernel", op="layer_norm_modulate",
                    shapes=[[1, tokens, dim], [1, 1, dim], [1, 1, dim]]))
    # VAE decoder, steady chunk (one latent frame, 2 cache frames prepended to every 3x3x3 conv).
    h, w = ceil_div(lat_h, s), ceil_div(lat_w, s)
    base = m["vae_base"]
    mult = m["dim_mult"]
    dims = [base * mult[-1]] + [base * x for x in reversed(mult)]
    up = list(reversed(m["temperal_downsample"]))
    convs = []
    t = 1

    def conv(ci, co):
        convs.append((ci, co, t + 2, h, w))

    conv(m["z_dim"], dims[0])  # conv_in
    for _ in range(2):  # mid block: two residual blocks
        conv(dims[0], dims[0])
        conv(dims[0], dims[0])
    stages = len(mult)
    for i in range(stages):
        cur = dims[i] // 2 if i > 0 else dims[i]
        o = dims[i + 1]
        for _ in range(m["num_res_blocks"] + 1):
            conv(cur, o)
            conv(o, o)
            cur = o
        if i + 1 != stages:
            if up[i]:
                t *= 2
            h, w = h * 2, w * 2
    conv(dims[stages], m["out_channels"])  # conv_out
    seen = set()
    for (ci, co, tt, hh, ww) in convs:
        key = (ci, co, tt, hh, ww)
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(name=f"conv3d {ci}->{co} k3 T={tt} {hh}x{ww}", kind="kernel", op="conv3d",
                        shapes=[[1, ci, tt, hh, ww], [co, ci, 3, 3, 3], [co]]))
    return out


def prod(xs):
    r = 1
    for x in xs:
        r *= x
    return r


ELEM_BYTES = {"f32": 4, "bf16": 2, "f16": 2}


def figures(case, dtype="f32"):
    """FLOPs and minimal bytes (elements of `dtype`), as vidrt_ir::cost counts them."""
    op, sh = case["op"], case["shapes"]
    e = ELEM_BYTES[dtype]
    if op == "copy":
        n = sh[0][0]
        return n, 2 * e * n
    if op == "matmul":
        (_, mm, k), (nn, _) = sh[0], sh[1]
        return 2 * mm * k * nn, e * (mm * k + nn * k + mm * nn)
    if op == "attention":
        (_, sq, h, d), (_, sk, _, _) = sh[0], sh[1]
        scores = h * sq * sk
        return 4 * scores * d + 5 * scores, e * (2 * sq * h * d + 2 * sk * h * d)
    if op == "rms_norm":
        x = prod(sh[0])
        return 4 * x, e * (2 * x + sh[1][0])
    if op == "layer_norm_modulate":
        x = prod(sh[0])
        return 8 * x, e * (2 * x + 2 * sh[1][-1])
    if op == "conv3d":
        (_, ci, t, hh, ww), (co, _, kt, kh, kw) = sh[0], sh[1]
        outn = co * (t - kt + 1) * hh * ww
        flops = 2 * outn * ci * kt * kh * kw + outn
        return flops, e * (prod(sh[0]) + prod(sh[1]) + co + outn)
    raise ValueError(f"unknown op {op}")


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_result(case, time_ms, flops, nbytes, dtype="f32", timing="wall"):
    secs = time_ms * 1e-3
    return dict(
        name=case["name"], kind=case["kind"], op=case["op"], shapes=case["shapes"], dtype=dtype,
        time_ms=time_ms, timing=timing, flops=int(flops), bytes=int(nbytes),
        tflops=flops / secs / 1e12 if secs > 0 else 0.0,
        gbps=nbytes / secs / 1e9 if secs > 0 else 0.0,
        intensity=flops / nbytes if nbytes > 0 else 0.0,
    )


def apply_peaks(results):
    copy = next((r for r in results if r["kind"] == "peak" and r["op"] == "copy"), None)
    mm = next((r for r in results if r["kind"] == "peak" and r["op"] == "matmul"), None)
    if copy is None or mm is None:
        return None
    peaks = dict(copy_gbps=copy["gbps"], matmul_tflops=mm["tflops"], copy_name=copy["name"], matmul_name=mm["name"])
    for r in results:
        pf, pb = peaks["matmul_tflops"], peaks["copy_gbps"]
        r["frac_peak_flops"] = r["tflops"] / pf if pf > 0 else None
        r["frac_peak_bw"] = r["gbps"] / pb if pb > 0 else None
        att = min(pf, r["intensity"] * pb / 1e3)
        r["attainable_tflops"] = att
        r["frac_roofline"] = r["frac_peak_bw"] if r["flops"] == 0 else (r["tflops"] / att if att > 0 else None)
        for k in ("frac_peak_flops", "frac_peak_bw", "frac_roofline"):
            if r[k] is None:
                del r[k]
    return peaks


def torch_runner(case, args, torch, F, dev):
    """Returns fn(seed) -> time_ms for one run with fresh inputs."""
    op, sh = case["op"], case["shapes"]
    cuda = dev.type == "cuda"

    tdtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]

    def host_inputs(seed):
        g = torch.Generator().manual_seed(seed)
        return [(torch.rand(*s, generator=g) * 2 - 1).to(tdtype) for s in sh]

    def fn(xs):
        if op == "copy":
            return torch.neg(xs[0])
        if op == "matmul":
            return torch.matmul(xs[0], xs[1].t())
        if op == "attention":
            q, k, v = (x.transpose(1, 2) for x in xs)  # BSHD -> BHSD (views, as vidrt's layout)
            return F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1])).transpose(1, 2)
        if op == "rms_norm":
            x, wgt = xs
            if hasattr(F, "rms_norm"):
                return F.rms_norm(x, (x.shape[-1],), wgt, eps=1e-6)
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * wgt
        if op == "layer_norm_modulate":
            x, scale, shift = xs
            return F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift
        if op == "conv3d":
            x, wgt, b = xs
            return F.conv3d(x, wgt, b, padding=(0, 1, 1))
        raise ValueError(op)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def run(seed):
        xs = host_inputs(seed)
        with torch.inference_mode():
            if args.timing == "wall":
                sync()
                t0 = time.perf_counter()
                y = fn([x.to(dev) for x in xs])
                y = y.to("cpu")
                sync()
                return (time.perf_counter() - t0) * 1e3
            dxs = [x.to(dev) for x in xs]
            sync()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(dxs)
                end.record()
                end.synchronize()
                return start.elapsed_time(end)
            t0 = time.perf_counter()
            fn(dxs)
            return (time.perf_counter() - t0) * 1e3

    return run


def device_info(torch, dev):
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        cc = torch.cuda.get_device_capability(dev)
        return dict(backend="torch-cuda", name=p.name, arch=f"sm_{cc[0]}{cc[1]}",
                    driver=f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(backend="torch-cpu", name=name, arch=platform.machine(), driver=f"torch {torch.__version__}",
                threads=torch.get_num_threads())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="where to write the report")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--model", default="wan2.1-t2v-1.3b")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--timing", choices=["wall", "kernel"], default=None,
                    help="default: the --from report's timing (vidrt measures kernels on GPUs), else wall")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    ap.add_argument("--from", dest="from_report", default=None, help="take the benchmarks from a vidrt report")
    ap.add_argument("--filter", default=None, help="only benchmarks whose name contains this (peaks kept)")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default=None,
                    help="dtype of every op (default: the --from report's, else f32)")
    ap.add_argument("--dry-run", action="store_true", help="no torch: placeholder times, to check shapes and JSON")
    args = ap.parse_args(argv)
    if args.scale < 1:
        ap.error("--scale must be at least 1")
    if args.model.lower() not in PRESETS and args.model.lower() not in ALIASES and not args.from_report:
        ap.error(f"unknown model {args.model} (expected one of {', '.join(PRESETS)})")

    if args.from_report:
        with open(args.from_report) as f:
            src = json.load(f)
        known = {"copy", "matmul", "attention", "rms_norm", "layer_norm_modulate", "conv3d"}
        cases = [dict(name=r["name"], kind=r["kind"], op=r["op"], shapes=r["shapes"], flops=r.get("flops"),
                      bytes=r.get("bytes"))
                 for r in src["results"] if r["kind"] in ("kernel", "peak") and r["op"] in known]
        model, scale = src.get("model", args.model), src.get("scale", args.scale)
        if args.dtype is None:
            args.dtype = next((r.get("dtype", "f32") for r in src["results"] if r["kind"] == "kernel"), "f32")
        if args.timing is None:
            args.timing = next((r.get("timing") or "wall" for r in src["results"] if r["kind"] == "kernel"), "wall")
    else:
        args.dtype = args.dtype or "f32"
        args.timing = args.timing or "wall"
        cases = plan(args.model, args.scale, args.dtype)
        model, scale = args.model, args.scale
    if args.filter:
        cases = [c for c in cases if c["kind"] == "peak" or args.filter in c["name"]]

    results = []

    def save(tool, device):
        """Writes the report of the results so far (after every case: a run cut short keeps them)."""
        rs = [dict(r) for r in results]
        peaks = apply_peaks(rs)
        report = dict(schema=SCHEMA_VERSION, tool=tool, device=device, model=model, scale=scale,
                      warmup=args.warmup, repeats=max(args.repeats, 1), date_unix=int(time.time()), results=rs)
        if peaks is not None:
            report["peaks"] = peaks
        write_atomic(args.json, json.dumps(report, indent=2) + "\n")

    if args.dry_run:
        tool = "torch-peer dry run (placeholder times: nothing was run)"
        device = dict(backend="torch-dry-run", name="none", arch="", driver="")
        for c in cases:
            fl, by = figures(c, args.dtype)
            results.append(make_result(c, 1.0, c.get("flops") or fl, c.get("bytes") or by, args.dtype, args.timing))
    else:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            print("torch_peer.py: PyTorch is not installed (pip install torch), or use --dry-run", file=sys.stderr)
            return 2
        dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.backends.cuda.matmul.allow_tf32 = False  # vidrt's kernels are f32
        torch.backends.cudnn.allow_tf32 = False
        tool = f"torch {torch.__version__} ({args.timing} timing, {args.dtype})"
        device = device_info(torch, dev)
        for i, c in enumerate(cases):
            print(f"[{i + 1}/{len(cases)}] {c['name']}", file=sys.stderr)
            run = torch_runner(c, args, torch, F, dev)
            seed = 1
            for _ in range(args.warmup):
                run(seed)
                seed += 1
            times = []
            for _ in range(max(args.repeats, 1)):
                times.append(run(seed))
                seed += 1
            fl, by = figures(c, args.dtype)
            results.append(make_result(c, statistics.median(times), c.get("flops") or fl, c.get("bytes") or by,
                                       args.dtype, args.timing))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            save(tool, device)

    save(tool, device)
    print(f"wrote {args.json} ({len(results)} results)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
