//! WGSL compute kernels, generated from parameters (issue 7). One module per kernel family;
//! every generator returns a [`WgslKernel`]: the shader text, its entry point
//! (`<family>_<variant>_<dtype>`), its workgroup shape and its binding list.
//!
//! Binding convention (group 0), shared by every kernel so the runtime binds them uniformly:
//! - binding 0: `meta: array<u32>` (read-only storage): the kernel's runtime parameters
//!   (sizes, strides, f32 scalars as bit patterns). Each family documents its layout and
//!   provides a `meta` function that builds it, so the text and the layout live together.
//! - bindings 1..=n: the inputs (read-only storage), in the order of [`WgslKernel::inputs`];
//! - binding n+1: the output (read-write storage).
//!
//! Elements on the device: f32 for floating-point tensors, i32 for integer tensors (i64
//! narrowed by the runtime, with a range check), and f16 for f16 tensors where the adapter
//! has `shader-f16`. The generators write f32 (or i32) kernels; [`f16::retype`] turns any
//! of them into one that reads chosen inputs as `array<f16>` (widened to f32 on load) and
//! writes its output as `array<f16>` (rounded to nearest even on store): arithmetic and
//! accumulation stay f32, storage and bandwidth halve. bf16 has no WGSL type: bf16 tensors
//! stay in f32 words, rounded to bf16 at every op's output.
//!
//! Optional adapter features a kernel uses are in [`WgslKernel::features`]: the lane
//! kernels have a subgroup variant ([`Features::subgroups`]: `subgroupAdd`/`Max`/`Min`
//! within a subgroup, workgroup memory only across subgroups), used where the adapter has
//! wgpu's `SUBGROUP` feature.
//!
//! 1-D launches use a 2-D grid (x ≤ 65535 groups) and [`LINEAR_INDEX`] to linearise it.

pub mod attention;
pub mod copy;
pub mod elementwise;
pub mod f16;
pub mod gemm;
pub mod lane;
pub mod misc;

/// The WGSL element type of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    I32,
    U32,
    /// Half precision (needs [`Features::f16`]): two elements per 32-bit word.
    F16,
}

impl Elem {
    /// The WGSL type name.
    pub fn wgsl(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::I32 => "i32",
            Elem::U32 => "u32",
            Elem::F16 => "f16",
        }
    }

    /// The 32-bit words that `n` elements take.
    pub fn words(self, n: usize) -> usize {
        match self {
            Elem::F16 => n.div_ceil(2),
            _ => n,
        }
    }
}

/// Optional adapter features: what a kernel needs, or what a device offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Subgroup operations and builtins (wgpu `Features::SUBGROUP`).
    pub subgroups: bool,
    /// The `f16` type in storage and arithmetic (`enable f16;`, wgpu `Features::SHADER_F16`).
    pub f16: bool,
}

impl Features {
    /// No optional feature (plain WGSL).
    pub const NONE: Features = Features { subgroups: false, f16: false };

    /// Whether a device offering `self` can run a kernel needing `need`.
    pub fn covers(self, need: Features) -> bool {
        (self.subgroups || !need.subgroups) && (self.f16 || !need.f16)
    }

    /// The features both have.
    pub fn and(self, other: Features) -> Features {
        Features { subgroups: self.subgroups && other.subgroups, f16: self.f16 && other.f16 }
    }

    /// The naga validation capabilities these features enable.
    pub fn capabilities(self) -> naga::valid::Capabilities {
        let mut c = naga::valid::Capabilities::default();
        if self.subgroups {
            c |= naga::valid::Capabilities::SUBGROUP;
        }
        if self.f16 {
            c |= naga::valid::Capabilities::SHADER_FLOAT16;
        }
        c
    }
}

/// A generated compute kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct WgslKernel {
    /// The entry point name.
    pub entry: String,
    /// The whole shader module.
    pub source: String,
    /// `@workgroup_size`.
    pub workgroup: [u32; 3],
    /// Element types of the input bindings (1..=n).
    pub inputs: Vec<Elem>,
    /// Element type of the output binding (n+1).
    pub output: Elem,
    /// The optional adapter features the shader uses.
    pub features: Features,
}

/// Errors from generating or validating a kernel.
#[derive(Debug, thiserror::Error)]
pub enum WgslError {
    /// A parameter point the generator does not accept.
    #[error("kernel `{kernel}`: invalid parameters: {reason}")]
    BadParams { kernel: String, reason: String },
    /// naga rejected the text.
    #[error("kernel `{kernel}` does not validate: {reason}")]
    Invalid { kernel: String, reason: String },
}

/// Threads per workgroup of the 1-D (elementwise-style) kernels.
pub const LINEAR_WG: u32 = 256;

/// Largest workgroup count per grid dimension (WebGPU's default limit).
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// WGSL helper that turns a 2-D grid of 1-D workgroups into a linear index.
pub const LINEAR_INDEX: &str =
    "fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {\n    return wg.y * nwg.x + wg.x;\n}\n";

/// A 2-D grid covering `groups` workgroups (x ≤ [`MAX_GROUPS_PER_DIM`]).
pub fn grid_for(groups: u64) -> [u32; 3] {
    let groups = groups.max(1);
    let x = groups.min(u64::from(MAX_GROUPS_PER_DIM));
    let y = groups.div_ceil(x);
    [x as u32, y.min(u64::from(u32::MAX)) as u32, 1]
}

/// An f32 literal that is exact for any value (including infinities): a bit cast.
pub fn f32_lit(v: f64) -> String {
    format!("bitcast<f32>({}u)", (v as f32).to_bits())
}

/// The binding declarations of the convention above (preceded by `enable f16;` when a
/// binding is f16).
pub(crate) fn bindings(inputs: &[(&str, Elem)], output: (&str, Elem)) -> String {
    let half = inputs.iter().map(|x| x.1).chain([output.1]).any(|e| e == Elem::F16);
    let mut s = String::from(if half { "enable f16;\n" } else { "" });
    s += "@group(0) @binding(0) var<storage, read> pm: array<u32>;\n";
    for (i, (name, e)) in inputs.iter().enumerate() {
        s += &format!("@group(0) @binding({}) var<storage, read> {name}: array<{}>;\n", i + 1, e.wgsl());
    }
    s += &format!(
        "@group(0) @binding({}) var<storage, read_write> {}: array<{}>;\n",
        inputs.len() + 1,
        output.0,
        output.1.wgsl()
    );
    s
}

/// What [`validate`] learned about a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Bytes of `var<workgroup>` memory the module declares.
    pub workgroup_bytes: u64,
}

/// Parses and validates `k` with naga (the default capabilities plus those of
/// [`WgslKernel::features`]) and measures its workgroup memory (wgpu does not check it against the adapter's limit).
pub fn validate(k: &WgslKernel) -> Result<ModuleInfo, WgslError> {
    let invalid = |reason: String| WgslError::Invalid { kernel: k.entry.clone(), reason };
    let module = naga::front::wgsl::parse_str(&k.source).map_err(|e| invalid(e.emit_to_string(&k.source)))?;
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), k.features.capabilities());
    v.validate(&module).map_err(|e| invalid(e.emit_to_string(&k.source)))?;
    if !module.entry_points.iter().any(|e| e.name == k.entry) {
        return Err(invalid(format!("no entry point `{}`", k.entry)));
    }
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).map_err(|e| invalid(e.to_string()))?;
    let workgroup_bytes = module
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
        .map(|(_, g)| u64::from(layouter[g.ty].size))
        .sum();
    Ok(ModuleInfo { workgroup_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_group() {
        for n in [0u64, 1, 65535, 65536, 1 << 24] {
            let g = grid_for(n);
            assert!(u64::from(g[0]) * u64::from(g[1]) >= n.max(1));
            assert!(g[0] <= MAX_GROUPS_PER_DIM);
        }
    }

    #[test]
    fn validation_rejects_bad_text() {
        let k = WgslKernel {
            entry: "broken_x_f32".into(),
            source: "@compute @workgroup_size(1) fn broken_x_f32() { let a: f32 = 1u; }".into(),
            workgroup: [1, 1, 1],
            inputs: vec![],
            output: Elem::F32,
            features: Features::NONE,
        };
        assert!(validate(&k).is_err());
    }
}

#[cfg(test)]
mod validate_all;
