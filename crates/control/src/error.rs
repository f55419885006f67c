//! Every error the control API can return, and its one mapping to gRPC status codes.

use shoal_raft::ProposeError;
use shoal_store::StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit on what is open at once was reached (e.g. log reads).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A single change over the raft entry limit: refused, never retried.
    #[error("the change is too large: {size} bytes encoded, at most {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("this manager is not the leader")]
    NotLeader,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(e.to_string()),
            StoreError::NotFound { .. } | StoreError::RevisionNotFound { .. } | StoreError::NetworkNotFound { .. } => {
                ApiError::NotFound(e.to_string())
            }
            StoreError::OutOfSequence { .. }
            | StoreError::NodeOutOfSequence { .. }
            | StoreError::NoPreviousSpec { .. }
            | StoreError::NothingToPause { .. }
            | StoreError::NothingToResume { .. }
            | StoreError::NothingToAbort { .. }
            | StoreError::NothingToApprove { .. }
            | StoreError::NothingToFinish { .. }
            | StoreError::RolloutIdTaken { .. }
            | StoreError::Rename { .. }
            | StoreError::ModeChange { .. }
            | StoreError::ClusterOutOfSequence { .. }
            | StoreError::DataInUse { .. }
            | StoreError::NoVirtualIp { .. }
            | StoreError::PortInUse { .. }
            | StoreError::StackMoved { .. }
            | StoreError::DataInPreviousSpec { .. }
            | StoreError::NoCluster
            | StoreError::ClusterExists
            | StoreError::SecurityExists
            | StoreError::NoSecurity => ApiError::FailedPrecondition(e.to_string()),
            StoreError::Malformed(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { .. } => ApiError::NotLeader,
            ProposeError::Refused(msg) => ApiError::FailedPrecondition(msg),
            ProposeError::MemberChangePending => ApiError::FailedPrecondition(e.to_string()),
            ProposeError::LeadershipLost
            | ProposeError::Dropped(_)
            | ProposeError::Stopped
            | ProposeError::Overloaded { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::InvalidArgument(_) | ApiError::TooLarge { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) | ApiError::NotLeader => Code::Unavailable,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}
