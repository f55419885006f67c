//! shoal's domain model: specs, objects, states and their validation. No IO lives here.
#![forbid(unsafe_code)]

pub mod constraint;
pub mod duration;
pub mod ids;
pub mod image_ref;
pub mod limits;
pub mod mount;
pub mod object;
pub mod rollout;
pub mod secret;
pub mod spec;
pub mod stack;
pub mod state;
pub mod traffic;
pub mod units;
pub mod validate;

pub use constraint::{Constraint, ConstraintError, ConstraintOp, PlacementPreference, PreferenceError};
pub use duration::{DurationError, GoDuration};
pub use mount::{Mount, MountType, Propagation, TmpfsOptions, VolumeOptions};
pub use object::*;
pub use rollout::{CanaryStep, OldTasks, Quantity, RolloutStrategy, StepPause, StepStatus, StepWait};
pub use secret::{DataKind, DataObject, DataReference, DataSpec, TaskFile, validate_data_name};
pub use spec::*;
pub use state::{Availability, NodeRole, NodeState, TaskState};
pub use validate::{JOB_ROLLBACK_CONFIG, JOB_UPDATE_CONFIG, ValidationError, validate_name, validate_rollout_id};
