//! Generated gRPC code for shoal's wire protocols (see `proto/shoal/v1`).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("shoal.v1");
}
