//! The tuning hook of the PTX lowering ([`super::lower::lower_with`]).
//!
//! Every tunable family (`matmul_wgmma` (sm_90a), `matmul_mma`, `matmul_simt`,
//! `conv3d_wgmma` (sm_90a), `conv3d_mma`, `conv3d_simt`, `attention_wgmma` (sm_90a), `attention_mma`, `attention_simt`) declares its
//! parameter space (`param_space()`, `simt_param_space()`, `mma_param_space()`,
//! `wgmma_param_space()` in its kernel module) and gives each point a text
//! form ([`Point::to_text`], [`Point::from_text`]: `bm=64,bn=64,bk=32,warps_m=2,warps_n=2`).
//! For every tunable node the lowering describes the problem ([`TuneProblem`]) and asks a
//! [`Chooser`] which point to use: a forced point (a tuner timing one candidate), a tuning
//! database's winner, or the deterministic heuristic ([`Heuristics`], what
//! [`super::lower::lower`] uses). The chooser lives in the runtime, which owns the database.
//!
//! Validity is decided by rules, never by a crash: a point whose generator returns an error
//! for the shape, or whose shared memory exceeds what one block may use where the kernels
//! will run ([`Chooser::max_shared`]: the target's opt-in maximum, [`Target::max_shared`],
//! 163 KiB on sm_80 and 227 KiB on sm_90a, or the device's own lower value), is not a
//! candidate ([`TuneProblem::generate`] fails for it). Past 48 KiB
//! ([`super::builder::STATIC_SHARED_MAX`]) a kernel's shared memory is dynamic. A forced point
//! that does not generate is an error (the candidate failed); a database winner that does not
//! generate is ignored and the heuristic is used ([`Chooser::record`] is told which).

use super::builder::STATIC_SHARED_MAX;
use super::{Kernel, KernelError, Target};

/// Rounds a dimension up to its tuning bucket: exact up to 64, then the next power of two.
/// The key of a problem holds its dimensions bucketed, and the candidate-set hash is taken
/// over the candidates generated at the bucketed shape ([`TuneProblem::representative`]),
/// so nearby shapes share a winner.
pub fn bucket(d: usize) -> usize {
    if d <= 64 {
        d
    } else {
        d.next_power_of_two()
    }
}

/// A parameter point of a tunable family, with a `name=value,...` text form.
pub trait Point: Copy + Sized {
    /// The field names, in text order.
    const NAMES: &'static [&'static str];
    /// Values for names a text may leave out (a field added after tuning databases were
    /// written: the old texts keep their meaning).
    const DEFAULTS: &'static [(&'static str, u32)] = &[];

    fn values(self) -> Vec<u32>;

    /// The point with these values (one per name), if it is one of this type.
    fn from_values(v: &[u32]) -> Option<Self>;

    /// `name=value` pairs joined by commas, in [`Point::NAMES`] order.
    fn to_text(self) -> String {
        Self::NAMES.iter().zip(self.values()).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
    }

    /// Parses [`Point::to_text`]'s form (every name exactly once, any order, except that a
    /// name of [`Point::DEFAULTS`] may be left out); `None` for anything else.
    fn from_text(text: &str) -> Option<Self> {
        let mut v: Vec<Option<u32>> = vec![None; Self::NAMES.len()];
        for part in text.split(',') {
            let (name, value) = part.trim().split_once('=')?;
            let i = Self::NAMES.iter().position(|n| *n == name.trim())?;
            if v[i].is_some() {
                return None;
            }
            v[i] = Some(value.trim().parse().ok()?);
        }
        for (n, d) in Self::DEFAULTS {
            if let Some(i) = Self::NAMES.iter().position(|x| x == n) {
                v[i] = v[i].or(Some(*d));
            }
        }
        let v: Option<Vec<u32>> = v.into_iter().collect();
        Self::from_values(&v?)
    }
}

/// A generator of one family's kernel at a point given by its text.
pub type Generate<'a> = dyn Fn(&str) -> Result<Kernel, KernelError> + 'a;

/// One tunable node as the lowering sees it.
pub struct TuneProblem<'a> {
    /// The family and input dtype, e.g. `matmul_mma_bf16` (what a forced point names).
    pub family: String,
    /// Input and output dtypes, e.g. `bf16,bf16->f32`.
    pub dtypes: String,
    /// The exact dimensions (family-specific: matmul `[batch, M, N, K]`, conv3d
    /// `[B, Cout, Cin, T, H, W]`, attention `[B·H, Sq, Sk]`); keys bucket them.
    pub dims: Vec<usize>,
    /// The exact dimensions whose alignment a winner may depend on.
    pub align: Vec<usize>,
    /// Other layout facts (transposes, bias, kernel size, stride, head dims, mask).
    pub layout: String,
    /// The text of every point of the family's space.
    pub space: Vec<String>,
    /// The kernel of a point at this problem's exact shape; an error for a point that is
    /// invalid here (bad tile for the shape, shared memory past [`Chooser::max_shared`]).
    pub generate: &'a Generate<'a>,
    /// The kernel of a point at the representative problem: the same layout facts at the
    /// bucketed dimensions, with a fixed name (what the candidate-set hash is taken over).
    pub representative: &'a Generate<'a>,
}

/// What a chooser says to use for one tunable node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The tuner's point: one that does not generate is an error (the candidate failed).
    Forced(String),
    /// A tuning database's winner: one that does not generate is ignored.
    Tuned(String),
    /// The deterministic heuristic.
    Heuristic,
}

/// Picks the parameter point of each tunable node.
pub trait Chooser {
    fn pick(&self, problem: &TuneProblem<'_>) -> Pick;

    /// The PTX target the kernels are lowered for, which decides the eligible families
    /// (`matmul_wgmma`, `conv3d_wgmma`, `attention_wgmma` on [`Target::Sm90a`] only). sm_80 unless the
    /// chooser says otherwise.
    fn target(&self) -> Target {
        Target::Sm80
    }

    /// Whether 16-bit matmuls, convs and attention lower to `matmul_wgmma` / `conv3d_wgmma` /
    /// `attention_wgmma` on [`Target::Sm90a`] (else to the `mma.sync` families): on by default
    /// for that target here; the runtime turns it on only where
    /// asked (the kernel has not run on hardware yet, see `runtime::cuda`).
    fn wgmma(&self) -> bool {
        self.target() == Target::Sm90a
    }

    /// Told whether a [`Pick::Tuned`] point was used (`true`) or was invalid here.
    fn record(&self, _used: bool) {}

    /// The most shared memory one block may use where the kernels will run: a point needing
    /// more is not valid. The target's opt-in maximum unless the chooser knows the device's
    /// (lower) value.
    fn max_shared(&self) -> u32 {
        self.target().max_shared()
    }
}

/// The deterministic heuristics alone (for sm_80).
#[derive(Clone, Copy, Debug, Default)]
pub struct Heuristics;

impl Chooser for Heuristics {
    fn pick(&self, _: &TuneProblem<'_>) -> Pick {
        Pick::Heuristic
    }
}

/// The deterministic heuristics for a given target.
#[derive(Clone, Copy, Debug)]
pub struct HeuristicsFor(pub Target);

impl Chooser for HeuristicsFor {
    fn pick(&self, _: &TuneProblem<'_>) -> Pick {
        Pick::Heuristic
    }

    fn target(&self) -> Target {
        self.0
    }
}

/// `k`, or `Unsupported` when it needs more shared memory than `max` bytes per block (see
/// [`Chooser::max_shared`]) or declares more than [`STATIC_SHARED_MAX`] statically.
pub fn within_shared_limit(k: Kernel, max: u32) -> Result<Kernel, KernelError> {
    if k.shared_bytes > STATIC_SHARED_MAX || k.shared_total() > max {
        return Err(KernelError::Unsupported(format!(
            "kernel `{}` needs {} bytes of shared memory ({} dynamic); the limit here is {max} \
             ({STATIC_SHARED_MAX} static)",
            k.name,
            k.shared_total(),
            k.dynamic_shared
        )));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::kernels::attention::{mma_param_space, simt_param_space};
    use crate::ptx::kernels::gemm::simt_param_space as gemm_simt_space;
    use crate::ptx::kernels::gemm_mma::param_space;

    fn round_trips<P: Point + PartialEq + std::fmt::Debug>(space: &[P]) {
        for p in space {
            assert_eq!(P::from_text(&p.to_text()), Some(*p), "{}", p.to_text());
        }
    }

    #[test]
    fn text_forms_round_trip_and_reject_junk() {
        round_trips(&param_space());
        round_trips(&gemm_simt_space());
        round_trips(&simt_param_space());
        round_trips(&mma_param_space());
        round_trips(&crate::ptx::kernels::gemm_wgmma::param_space());
        round_trips(&crate::ptx::kernels::attention::wgmma_param_space());
        round_trips(&crate::ptx::kernels::gemm_wgmma_tma::param_space());
        round_trips(&crate::ptx::kernels::conv3d_wgmma::conv_wgmma_space());
        // A wgmma text from before `producer` existed reads as the point without a producer.
        type W = crate::ptx::kernels::gemm_wgmma::WgmmaParams;
        let tma = W::from_text("bm=128,bn=128,bk=64,stages=4,swizzle=1");
        assert_eq!(tma, Some(crate::ptx::kernels::gemm_wgmma_tma::large()));
        // A conv text from before `positions_m` existed reads as the weights-as-A point.
        type C = crate::ptx::kernels::conv3d_wgmma::ConvWgmmaParams;
        let conv = crate::ptx::kernels::conv3d_wgmma::wgmma_param_space();
        assert_eq!(C::from_text("bm=64,bn=64,bk=64,stages=2,swizzle=1,producer=0,tiles=1"), Some(conv[0]));
        assert_eq!(C::from_text(&format!("{},positions_m=2", conv[0].tile.to_text())), None);
        assert!(conv.iter().any(|c| C::from_text(&c.to_text()).is_some_and(|p| p.positions_m)));
        // Nor `cl`: such a text is the gather form; `cl=1` the channels-last one.
        assert!(!conv.iter().any(|c| c.channels_last));
        let cl = C::from_text(&format!("{},positions_m=1,cl=1", conv[3].tile.to_text()));
        assert_eq!(cl, Some(C { channels_last: true, ..conv[3] }));
        assert_eq!(C::from_text(&format!("{},positions_m=1,cl=2", conv[3].tile.to_text())), None);
        let with = W::from_text("bm=128,bn=128,bk=64,stages=4,swizzle=1,producer=1");
        assert_eq!(with.map(|p| p.producer), Some(true));
        type A = crate::ptx::kernels::attention::WgmmaAttnParams;
        let attn = crate::ptx::kernels::attention::wgmma_param_space();
        assert_eq!(attn[0].to_text(), "wg=2,bkv=64,stages=3,producer=0,pingpong=0");
        // An attention text from before `producer` existed reads as the cp.async point.
        assert_eq!(A::from_text("wg=2,bkv=64,stages=3"), Some(attn[0]));
        assert_eq!(A::from_text("wg=2,bkv=64,stages=3,producer=1").map(|p| p.producer), Some(true));
        assert_eq!(A::from_text("wg=2,bkv=64,stages=3,producer=2"), None);
        let pp = A::from_text("wg=2,bkv=128,stages=2,producer=1,pingpong=1");
        assert_eq!(pp.map(|p| (p.producer, p.pingpong)), Some((true, true)));
        let p = param_space()[0];
        assert_eq!(p.to_text(), "bm=32,bn=32,bk=32,warps_m=1,warps_n=1,stages=2");
        type M = crate::ptx::kernels::gemm_mma::MmaParams;
        assert_eq!(M::from_text("stages=2,warps_n=1,warps_m=1,bk=32,bn=32,bm=32"), Some(p));
        // A text from before `stages` existed reads as the two-stage kernel it described.
        assert_eq!(M::from_text("warps_n=1,warps_m=1,bk=32,bn=32,bm=32"), Some(p));
        assert_eq!(M::from_text("bm=32,bn=32,bk=32,warps_m=1,warps_n=1,stages=3"), Some(M { stages: 3, ..p }));
        for bad in [
            "",
            "bm=32",
            "stages=2",
            "bm=32,bn=32,bk=32,warps_m=1,warps_n=1,x=2",
            "bm=32,bm=32,bk=32,warps_m=1,warps_n=1",
            "bm=32,bn=32,bk=32,warps_m=1,warps_n=1,stages=2,stages=3",
        ] {
            assert_eq!(M::from_text(bad), None, "{bad}");
        }
        assert_eq!(M::from_text("bm=-1,bn=32,bk=32,warps_m=1,warps_n=1"), None);
    }

    #[test]
    fn shared_limits_per_target() {
        use crate::ptx::builder::{KernelBuilder, MAX_SHARED};
        assert_eq!((Target::Sm80.max_shared(), Target::Sm90a.max_shared()), (166_912, 232_448));
        assert_eq!(Target::ALL.iter().map(|t| t.max_shared()).max(), Some(MAX_SHARED));
        let with = |bytes| {
            let mut b = KernelBuilder::new("k", "");
            b.shared(bytes);
            b.finish()
        };
        for t in Target::ALL {
            let max = t.max_shared();
            assert!(within_shared_limit(with(STATIC_SHARED_MAX), max).is_ok());
            assert!(within_shared_limit(with(max), max).is_ok_and(|k| k.dynamic_shared == max));
            let e = within_shared_limit(with(max + 16), max).unwrap_err();
            assert!(matches!(&e, KernelError::Unsupported(m) if m.contains("`k`") && m.contains(&max.to_string())));
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket(37), 37);
        assert_eq!(bucket(65), 128);
    }
}
