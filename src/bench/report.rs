//! Report output of `vidrt bench`: JSON (read back for `--compare`), a markdown table and
//! an SVG roofline, each written through a temporary file and a rename, and the
//! side-by-side comparison of two reports.

use std::path::Path;

use super::*;

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The report as pretty JSON.
pub fn to_json(r: &BenchReport) -> Result<String> {
    serde_json::to_string_pretty(r).map_err(|e| Error::Other(format!("bench report: {e}")))
}

pub fn write_json(r: &BenchReport, path: &Path) -> Result<()> {
    let mut s = to_json(r)?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Reads a report (ours or a peer's).
pub fn read_json(path: &Path) -> Result<BenchReport> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let r: BenchReport = serde_json::from_str(&text)
        .map_err(|e| Error::Case { path: path.to_path_buf(), reason: format!("not a bench report: {e}") })?;
    if r.schema != SCHEMA_VERSION {
        return Err(Error::Case {
            path: path.to_path_buf(),
            reason: format!("bench report schema {} (this build reads {SCHEMA_VERSION})", r.schema),
        });
    }
    Ok(r)
}

fn pct(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite()).map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

/// `x` with about three significant digits (scientific below 0.001).
fn sig(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1e-3 {
        let decimals = (2.0 - a.log10().floor()).max(0.0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

/// Table cells may not hold `|` or newlines.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn device_line(d: &BenchDevice) -> String {
    let mut s = format!("{} — {}", d.backend, if d.name.is_empty() { "unknown device" } else { &d.name });
    if !d.arch.is_empty() {
        s += &format!(", {}", d.arch);
    }
    if !d.driver.is_empty() {
        s += &format!(", driver {}", d.driver);
    }
    if let Some(t) = d.threads {
        s += &format!(", {t} threads");
    }
    s
}

/// The report as a markdown document: a header (device, settings, peaks) and one table row
/// per benchmark.
pub fn to_markdown(r: &BenchReport) -> String {
    let mut s = format!("# {} bench\n\n", r.tool);
    s += &format!("- device: {}\n", cell(&device_line(&r.device)));
    s += &format!(
        "- model: {}, scale 1/{}, {} warm-up + median of {} runs (fresh inputs each)\n",
        r.model, r.scale, r.warmup, r.repeats
    );
    if let Some(p) = &r.peaks {
        s += &format!(
            "- measured peaks: copy {} GB/s ({}), matmul {} TFLOP/s ({}); ridge {} FLOP/B\n",
            sig(p.copy_gbps),
            p.copy_name,
            sig(p.matmul_tflops),
            p.matmul_name,
            sig(p.ridge())
        );
    }
    s += if r.results.iter().all(|b| b.timing == "kernel") {
        "- time: the kernels' device time (CUDA events / wgpu timestamps), no host transfers\n\n"
    } else {
        "- time: wall time of one whole run (inputs written, kernels, outputs read back) where `timing` is not `kernel`\n\n"
    };
    s += "| benchmark | kind | time (ms) | TFLOP/s | GB/s | FLOP/B | % peak FLOP/s | % peak GB/s | % roofline |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for b in &r.results {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&b.name),
            b.kind,
            sig(b.time_ms),
            sig(b.tflops),
            sig(b.gbps),
            sig(b.intensity),
            pct(b.frac_peak_flops),
            pct(b.frac_peak_bw),
            pct(b.frac_roofline)
        );
    }
    if !r.failures.is_empty() {
        s += &format!("\n{} benchmarks failed:\n\n", r.failures.len());
        for f in &r.failures {
            s += &format!("- {}: {}\n", cell(&f.name), cell(&f.error));
        }
    }
    s
}

pub fn write_markdown(r: &BenchReport, path: &Path) -> Result<()> {
    write_atomic(path, to_markdown(r).as_bytes())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A log-log roofline plot (FLOP/B against TFLOP/s): the measured roofs, and one labelled
/// point (`<circle class="point">`) per benchmark.
pub fn to_svg(r: &BenchReport) -> String {
    const W: f64 = 960.0;
    const H: f64 = 640.0;
    const L: f64 = 80.0;
    const R: f64 = 40.0;
    const T: f64 = 50.0;
    const B: f64 = 60.0;
    let min_x = 1e-3f64;
    let min_y = 1e-9f64;
    let xs: Vec<f64> = r.results.iter().map(|b| b.intensity.max(min_x)).collect();
    let ys: Vec<f64> =
        r.results.iter().map(|b| if b.tflops.is_finite() { b.tflops.max(min_y) } else { min_y }).collect();
    let mut xlo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let mut xhi = xs.iter().copied().fold(0.0f64, f64::max);
    let mut ylo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let mut yhi = ys.iter().copied().fold(0.0f64, f64::max);
    if let Some(p) = &r.peaks {
        let ridge = p.ridge();
        if ridge.is_finite() && ridge > 0.0 {
            xlo = xlo.min(ridge);
            xhi = xhi.max(ridge);
        }
        if p.matmul_tflops > 0.0 {
            yhi = yhi.max(p.matmul_tflops);
        }
    }
    if !xlo.is_finite() || xlo <= 0.0 {
        xlo = 0.1;
    }
    if !ylo.is_finite() || ylo <= 0.0 {
        ylo = 1e-3;
    }
    xhi = xhi.max(xlo * 10.0);
    yhi = yhi.max(ylo * 10.0);
    let (dx0, dx1) = (xlo.log10().floor(), xhi.log10().ceil());
    let (dy0, dy1) = (ylo.log10().floor(), (yhi * 1.5).log10().ceil());
    let px = |x: f64| L + (x.max(min_x).log10() - dx0) / (dx1 - dx0) * (W - L - R);
    let py = |y: f64| H - B - (y.max(min_y).log10() - dy0) / (dy1 - dy0) * (H - T - B);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += &format!(
        "<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        W / 2.0,
        xml_escape(&format!("Roofline: {} on {}", r.tool, device_line(&r.device)))
    );
    // Decade grid and labels.
    let mut d = dx0;
    while d <= dx1 + 1e-9 {
        let x = px(10f64.powf(d));
        s += &format!("<line x1=\"{x:.1}\" y1=\"{T}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n", H - B);
        s += &format!("<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">1e{d}</text>\n", H - B + 16.0);
        d += 1.0;
    }
    let mut d = dy0;
    while d <= dy1 + 1e-9 {
        let y = py(10f64.powf(d));
        s += &format!("<line x1=\"{L}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n", W - R);
        s += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">1e{d}</text>\n", L - 6.0, y + 4.0);
        d += 1.0;
    }
    s += &format!(
        "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n",
        W - L - R,
        H - T - B
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">arithmetic intensity (FLOP/byte)</text>\n",
        (L + W - R) / 2.0,
        H - 18.0
    );
    s += &format!(
        "<text x=\"20\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {})\">TFLOP/s</text>\n",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    if let Some(p) = &r.peaks {
        let ridge = p.ridge();
        if p.copy_gbps > 0.0 && p.matmul_tflops > 0.0 && ridge.is_finite() {
            let x0 = 10f64.powf(dx0);
            let x1 = 10f64.powf(dx1);
            let pts = [(x0, p.attainable(x0)), (ridge, p.matmul_tflops), (x1, p.matmul_tflops)];
            let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            s += &format!(
                "<polyline class=\"roof\" points=\"{}\" fill=\"none\" stroke=\"#c33\" stroke-width=\"2\"/>\n",
                path.join(" ")
            );
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c33\">{}</text>\n",
                px(ridge) + 6.0,
                py(p.matmul_tflops) - 6.0,
                xml_escape(&format!("{} TFLOP/s, {} GB/s", sig(p.matmul_tflops), sig(p.copy_gbps)))
            );
        }
    }
    for (i, b) in r.results.iter().enumerate() {
        let (x, y) = (px(xs[i]), py(ys[i]));
        let color = match b.kind.as_str() {
            "peak" => "#c33",
            "model" => "#393",
            _ => "#36c",
        };
        let label = xml_escape(&b.name);
        s += &format!(
            "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"><title>{label}: {} ms, {} TFLOP/s, {} GB/s</title></circle>\n",
            sig(b.time_ms),
            sig(b.tflops),
            sig(b.gbps)
        );
        let (tx, anchor) = if x > L + 0.7 * (W - L - R) { (x - 6.0, "end") } else { (x + 6.0, "start") };
        s += &format!(
            "<text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"{anchor}\">{label}</text>\n",
            y - 4.0 + (i % 3) as f64 * 4.0
        );
    }
    s += "</svg>\n";
    s
}

pub fn write_svg(r: &BenchReport, path: &Path) -> Result<()> {
    write_atomic(path, to_svg(r).as_bytes())
}

/// A markdown table of `a` against `b` for every benchmark name both have: times, the time
/// ratio `a/b` (above 1: `a` is slower) and both throughputs; then the names only one has.
pub fn compare(a: &BenchReport, b: &BenchReport) -> String {
    let label = |r: &BenchReport| format!("{} on {}", r.tool, device_line(&r.device));
    let mut s = format!("A: {}\n\nB: {}\n\n", cell(&label(a)), cell(&label(b)));
    s += "| benchmark | A (ms) | B (ms) | A/B time | A TFLOP/s | B TFLOP/s | A GB/s | B GB/s |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    let bmap: BTreeMap<&str, &BenchResult> = b.results.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut only_a = Vec::new();
    for ra in &a.results {
        let Some(rb) = bmap.get(ra.name.as_str()) else {
            only_a.push(ra.name.as_str());
            continue;
        };
        let ratio = if rb.time_ms > 0.0 { format!("{:.2}", ra.time_ms / rb.time_ms) } else { "–".to_string() };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&ra.name),
            sig(ra.time_ms),
            sig(rb.time_ms),
            ratio,
            sig(ra.tflops),
            sig(rb.tflops),
            sig(ra.gbps),
            sig(rb.gbps)
        );
    }
    let anames: std::collections::HashSet<&str> = a.results.iter().map(|r| r.name.as_str()).collect();
    let only_b: Vec<&str> = b.results.iter().map(|r| r.name.as_str()).filter(|n| !anames.contains(n)).collect();
    if !only_a.is_empty() {
        s += &format!("\nOnly in A: {}\n", only_a.join("; "));
    }
    if !only_b.is_empty() {
        s += &format!("\nOnly in B: {}\n", only_b.join("; "));
    }
    s
}
