//! Typed IR errors. Each names the node (id, op, name) and what is wrong.

/// An error building, verifying or parsing a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IrError {
    /// An op's inputs do not fit it (shape, dtype, arity or parameters).
    #[error("node %{node} `{name}` ({op}): {reason}")]
    Invalid { node: usize, op: &'static str, name: String, reason: String },
    /// A node refers to an input that does not exist or comes after it.
    #[error("node %{node} `{name}` ({op}): input %{input} does not exist before it")]
    DanglingInput { node: usize, op: &'static str, name: String, input: usize },
    /// A node's stored shape or dtype disagrees with what its op infers.
    #[error("node %{node} `{name}` ({op}): stored {stored} but inference gives {inferred}")]
    Mismatch { node: usize, op: &'static str, name: String, stored: String, inferred: String },
    /// Two graph inputs, weights or outputs share a name.
    #[error("duplicate {kind} name `{name}`")]
    DuplicateName { kind: &'static str, name: String },
    /// An output refers to a node that does not exist.
    #[error("output `{name}` refers to missing node %{node}")]
    BadOutput { name: String, node: usize },
    /// A lookup by name found nothing.
    #[error("no {kind} named `{name}`")]
    NotFound { kind: &'static str, name: String },
    /// The text form could not be parsed.
    #[error("line {line}: {msg}")]
    Parse { line: usize, msg: String },
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
