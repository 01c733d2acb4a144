//! vidrt-ir: the graph IR of vidrt.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order; each applies an [`Op`] to earlier
//! nodes and carries its inferred [`Shape`] and [`DType`]. The builder methods on [`Graph`]
//! check every node as it is added; [`verify`] re-checks a whole graph (for graphs built by
//! hand or parsed from text); [`cost`] gives flops and minimal bytes; [`text`] prints and
//! parses the readable form.
//!
//! ```
//! use vidrt_ir::{DType, Graph};
//! let mut g = Graph::new();
//! let x = g.input("x", [2, 16], DType::F32)?;
//! let w = g.weight("proj.weight", [8, 16], DType::F32)?;
//! let y = g.linear(x, w, None)?;
//! let y = g.silu(y)?;
//! g.set_output("y", y)?;
//! vidrt_ir::verify(&g)?;
//! assert_eq!(g.shape(y).dims(), &[2, 8]);
//! let back = vidrt_ir::text::parse(&vidrt_ir::text::print(&g))?;
//! assert_eq!(back.nodes, g.nodes);
//! # Ok::<(), vidrt_ir::IrError>(())
//! ```

pub mod cost;
mod dtype;
mod error;
pub mod expr;
mod graph;
pub mod infer;
pub mod op;
pub mod passes;
mod shape;
pub mod tensor;
pub mod text;
mod verify;

pub use dtype::{DType, UnknownDType};
pub use error::{IrError, Result};
pub use expr::{ElementwiseExpr, ExprStep};
pub use graph::{Graph, Node, NodeId};
pub use op::{Arity, BinaryOp, Op, ReduceOp, RmsStyle, TrigPart, UnaryOp};
pub use shape::Shape;
pub use tensor::{ShapeDataMismatch, Tensor, TensorData};
pub use verify::verify;
