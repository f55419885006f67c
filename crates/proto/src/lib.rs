//! Generated gRPC code for shoal's wire protocols (see `proto/shoal/v1`).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

/// The largest gRPC message any shoal client or server sends or accepts (every one sets it
/// explicitly, so a reply one side can build the other can read). Callers without a certificate
/// are held to far less by the manager's auth layer.
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;

pub mod v1 {
    tonic::include_proto!("shoal.v1");
}
